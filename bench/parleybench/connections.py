"""New connections a measurement cost: to PostgreSQL, to each Redis instance and to the model.

A reply should reuse what its process holds (the database pool, the Redis pools, the model
client's keep-alive connections), so after a warm-up the count per reply should be 0. The
servers count for us: PostgreSQL's `pg_stat_database.sessions`, Redis's
`total_connections_received`, and the fake model's record of the connection each request came
on. The harness's own clients here are opened once and kept, so they add nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

SESSIONS = "SELECT sessions FROM pg_stat_database WHERE datname = current_database()"
# A new backend reports its session when it first goes idle; give the last ones that moment.
SETTLE_SECONDS = 0.5


@dataclass
class ConnectionCounters:
    broker: redis.Redis
    channels: redis.Redis
    database: psycopg.Connection[Any]
    # Every connection id the fake model has seen a chat request on, over the whole run.
    model_connections_seen: set[int] = field(default_factory=set)

    @classmethod
    def open(
        cls, broker: redis.Redis, channels: redis.Redis, app_env: dict[str, str]
    ) -> ConnectionCounters:
        database = psycopg.connect(app_env["PARLEY_DATABASE_URL"], autocommit=True)
        counters = cls(broker, channels, database)
        counters.snapshot()  # connects the Redis clients now, not inside a measurement
        return counters

    def snapshot(self) -> dict[str, int]:
        row = self.database.execute(SESSIONS).fetchone()
        return {
            "postgres": int(row[0]) if row else 0,
            "redis-broker": int(self.broker.info("stats")["total_connections_received"]),
            "redis-channels": int(self.channels.info("stats")["total_connections_received"]),
        }

    def since(self, before: dict[str, int]) -> dict[str, int]:
        time.sleep(SETTLE_SECONDS)
        after = self.snapshot()
        return {name: after[name] - before[name] for name in before}

    def new_model_connections(self, connections: list[int]) -> int:
        """How many of these request connections the model had not seen a request on."""
        new = set(connections) - self.model_connections_seen
        self.model_connections_seen |= new
        return len(new)

    def close(self) -> None:
        self.database.close()
        self.broker.close()
        self.channels.close()
