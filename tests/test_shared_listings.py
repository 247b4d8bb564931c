"""One LIST per station for a run's late windows (`storage.layout.shared_listings`)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage import layout
from tasks.window import WindowKey

DAY = 86_400
windows = st.lists(
    st.tuples(
        st.sampled_from(["00433", "00430", "0043", "10381"]),
        st.integers(0, 20_000),  # days since 1970: decades of history
        st.sampled_from([3_600, DAY]),
    ),
    min_size=1,
    max_size=30,
)


def _key(station: str, day: int, size: int) -> WindowKey:
    return WindowKey(station, day * DAY // size, size)


@given(windows, st.sampled_from(["dwd.obs", "dwd.obs/p0"]))
def test_each_window_is_listed_once_under_a_prefix_of_its_own(found: list, scope: str) -> None:
    prefixes = {layout.window_checkpoints_prefix(scope, _key(*w)) for w in found}
    listings = layout.shared_listings(prefixes)
    covered = [p for members in listings.values() for p in members]
    assert sorted(covered) == sorted(prefixes)  # every window once
    for listing, members in listings.items():
        assert all(p.startswith(listing) for p in members)
        # one station per LIST, never a listing above the station's directory
        stations = {p.rstrip("/").rpartition("/")[0] for p in members}
        assert len(stations) == 1
        assert listing.startswith(stations.pop() + "/")
        if len(members) == 1:
            assert listing == members[0]
    assert len(listings) == len({w[0] for w in found})


def test_days_of_one_month_share_that_month_and_a_lone_window_keeps_its_prefix() -> None:
    days = [_key("00433", d, DAY) for d in range(19_700, 19_710)]  # 2023-12-09..18
    lone = _key("10381", 19_700, DAY)
    prefixes = [layout.window_checkpoints_prefix("t", k) for k in [*days, lone]]
    listings = layout.shared_listings(prefixes)
    assert set(listings) == {"checkpoints/t/00433/202312", prefixes[-1]}
