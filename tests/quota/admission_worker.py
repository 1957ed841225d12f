"""A separate process that hammers one pool: ``python admission_worker.py URL ATTEMPTS SEED``.

Each attempt submits a request, then releases it when admitted or leaves the queue when not
(while it waits, another process's release may admit it: then the cancel gives it back).
Prints the number of grants it got.
"""

from __future__ import annotations

import random
import sys

from shipyard.quota.admission import LeaseManager, LeaseRequest
from shipyard.store import Store


def main() -> None:
    url, attempts, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)
    store = Store(url, migrate=False)
    leases = LeaseManager(store, lease_ttl_s=300, default_pool="hot")
    granted = 0
    for i in range(attempts):
        request = LeaseRequest(
            f"p{seed % 3}", {"cpu": rng.choice([1, 2]), "memory": "1Gi"}, step=f"s{i}"
        )
        lease_id, lease = leases._submit(request)
        if lease is None:
            leases.cancel(lease_id)
        else:
            granted += 1
            leases.release(lease)
    leases.close()
    store.dispose()
    print(granted)


if __name__ == "__main__":
    main()
