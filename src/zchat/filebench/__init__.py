"""``zchat bench --files`` and ``bench/files.py``: how fast a file moves through zchat,
against the two limits of moving it over loopback, in the same run.

* ``config``: what a run is (the file's size, repetitions, the targets);
* ``copies``: the two baselines, a plain TCP copy and a bare pyzmq credit-based
  transfer (the ZeroMQ guide's fileio3), each end in its own process;
* ``peers``: zchat's clients in processes of their own (the one that sends the file,
  the one that fetches it, and two that chat meanwhile) and the RSS readings;
* ``run``: one run, a spawned broker a repetition;
* ``report``: its figures, the table and the targets met or not.

Only loopback traffic; every loop is bounded in count and time.
"""
