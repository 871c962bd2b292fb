"""What mcc tells the user (internal): ``analysis`` (time and cost of runs), ``pricing`` (EC2 prices and
the shipped table in ``prices/``), ``plots``, ``logs`` (merged run logs), ``display`` (rich renderables from
plain rows), ``doctor`` (is this machine ready?) and ``cli_reference`` (README's generated CLI section).
"""
