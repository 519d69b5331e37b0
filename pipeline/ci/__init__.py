"""CI builds (`deploy build`): a models x targets x precisions matrix from one config.

``config`` reads deploy.toml into entries; ``entry`` builds one (lock, ``cachekey``, compile into
place, verification); ``matrix`` runs them all (a process pool) and keeps index.json and
SHA256SUMS; ``report`` prints the table, the JSON summary and JUnit XML. To scale out over CI
runners, ``shard`` gives each of N runners a deterministic, cost-balanced share of the entries
(`deploy build --shard K/N`) and ``merge`` checks and combines the N outputs into one
(`deploy build-merge`).
"""
