"""Code that runs on the instances (or local processes): the manager and the worker.

Installed inside the mcc wheel as ``mcc.remote``; run as ``python -m mcc.remote.manager`` and
``python -m mcc.remote.worker``. Everything comes from the environment (see ``runtime``).
"""
