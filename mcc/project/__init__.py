"""The user's project folder (internal): ``folder`` loads and checks ``points.py``, the entry and
``combine_data.py``; ``settings`` turns ``mcc.toml`` + flags into a typed Settings; ``scaffold`` writes the
starter project of ``mcc init`` from the files in ``starter/``.
"""
