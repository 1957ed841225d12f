"""Quota: pools, leases and admission, enforcement, usage, planning, estimation, hardware advice."""

from shipyard.quota.admission import (
    Lease,
    LeaseManager,
    LeaseRequest,
    QuotaAdmission,
    reclaim_expired,
)
from shipyard.quota.enforce import MemoryWatchdog, QuotaEnforcer
from shipyard.quota.pools import (
    Member,
    Pool,
    apply_pools,
    check_feasible,
    list_pools,
    load_pool,
    read_pool_file,
)
from shipyard.quota.resources import parse_amounts, parse_quantity

__all__ = [
    "Lease",
    "LeaseManager",
    "LeaseRequest",
    "Member",
    "MemoryWatchdog",
    "Pool",
    "QuotaAdmission",
    "QuotaEnforcer",
    "apply_pools",
    "check_feasible",
    "list_pools",
    "load_pool",
    "parse_amounts",
    "parse_quantity",
    "read_pool_file",
    "reclaim_expired",
]
