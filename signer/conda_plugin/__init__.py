"""Install-time enforcement for conda (DESIGN.md section 12).

conda loads `signer.conda_plugin.plugin` through the `conda` entry point at every start-up,
so that module imports nothing heavy; the checks live in `hook` (which imports conda) and
`enforce` and `config` (which do not), loaded when a transaction is solved.
"""
