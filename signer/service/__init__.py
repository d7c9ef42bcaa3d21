"""The trust service: keeps the delegations, publishes the trust repository, takes attestations.

Modules, in the order a request meets them:

- `config`: settings from the command line and the environment (`CF_SIGN_DB`, ...).
- `db`: SQLAlchemy models and engines; `migrations`: Alembic, applied at start-up.
- `app`: `create_app(settings)`; `routers/`: public trust files, health and metrics,
  attestation intake, the admin API; `deps`: database and bearer-token dependencies.
- `publisher`: the one place that signs and publishes documents, serialized in the database.
- `intake`: verifying and storing attestations; `registry`: feedstocks, keys and outputs.
- `online_keys`: the key_mgr/pkg_mgr signers, from the KEYREFs `service init` stored.
- `audit`: the hash-chained audit log; `tokens`: bearer tokens (stored as hashes).

Nothing on the verifier path imports this package.
"""
