"""Test configuration: real servers are started by session-scoped fixtures in tests/fixtures/."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

pytest_plugins = [
    "tests.fixtures.services",  # noida-db (Kafka protocol) and SeaweedFS (S3)
    "tests.fixtures.chains",  # anvil (EVM) and litecoind (Bitcoin Core RPC, regtest)
    "tests.fixtures.multichain",  # replay server of recorded MultiChain 2.3.3 exchanges
    "tests.fixtures.prefect",  # one session-scoped prefect_test_harness
    "tests.fixtures.guide",  # docs/operations.md one-machine section: server, worker, runs
]
