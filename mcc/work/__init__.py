"""What the laptop and the instances share (internal; imported by ``mcc.remote`` on every instance).

``runspec`` is the run as the remote side reads it from the bucket (spec and key layout); ``queue`` the
leased queue on Redis; ``stores`` the bucket stores (a directory, S3); ``combine`` the combiner of result
files; ``atomic`` whole-file writes by rename. Light imports only: a worker pays for nothing else.
"""
