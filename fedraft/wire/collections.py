"""The collections the List RPC pages through, and the ListResponse field that carries each one's
records: shared by the service that fills a page and the client that reads it."""

from __future__ import annotations

LIST_FIELDS: dict[str, str] = {
    "registry": "records", "pools": "pools", "workloads": "workloads", "pairings": "pairings",
    "catalog": "catalog", "pending": "pending", "principals": "principals", "policy": "policy",
    "memories": "memories",
}
