"""Driving a run from the laptop (internal).

``prepare`` checks the project and settings and plans the chunks; ``supervisor`` walks a Run through
its states (provision, launch, follow, combine, collect) and relaunches a dead manager; ``engine`` applies
the write-ahead rule to every resource the backends' providers create or delete; ``journal`` mirrors the
remote side's events into the ledger; ``cleaner`` deletes in dependency order and sweeps; ``wheel`` builds
the mcc wheel instances install; ``context`` binds a ledger to a backend and an engine.
"""
