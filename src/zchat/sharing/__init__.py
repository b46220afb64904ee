"""File sharing: what a shared file is called, what it holds, and how it moves.

``naming.py``: a file's safe name on disk, a free name beside others, its size for
people. ``media.py``: pictures told by their content (type, width, height).
The broker's side is in ``zchat.broker.files``, the clients' in ``zchat.client.transfers``.
"""
