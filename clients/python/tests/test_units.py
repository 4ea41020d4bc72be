"""The client's own rules, without a server: the freshness queue, units, the DataFrame."""
import numpy as np
import pytest

import meg_decoder_client as mdc
from meg_decoder_client._fresh import FreshQueue
from meg_decoder_client.session import unit_factor


def dec(seq, age_ms=0.0, received_at=0.0, missed=0, png=None):
    return mdc.Decoding(seq, "continuous", None, None, 0.0, 1.0, 1.0, 1.0, 1.0, np.zeros(4, np.float32), [], png,
                        seq if png else 0, missed, False, age_ms, "m@1", received_at)


def test_stale_decodings_are_dropped_and_counted_with_the_servers_misses():
    q = FreshQueue(max_age_s=1.0, latest_only=False)
    q.put(dec(0, received_at=0.0), now=0.0)
    q.put(dec(1, received_at=0.1, missed=2), now=0.1)   # the server had lost 2 before it
    q.put(dec(3, received_at=1.5), now=1.5)            # pruned on arrival: 0 and 1 are stale
    assert len(q.items) == 1
    d = q.pop(now=1.6)
    assert d.sequence == 3 and d.missed == 1 + 1 + 2 and abs(d.age_ms - 100.0) < 1e-6
    assert q.pop(now=1.6) is None and q.dropped_total == 2


def test_latest_only_keeps_one_and_an_image_rides_on_the_next_decoding():
    q = FreshQueue(max_age_s=10.0, latest_only=True)
    q.put(dec(0, png=b"png0"), now=0.0)
    q.put(dec(1), now=0.0)
    q.put(dec(2), now=0.0)
    d = q.pop(now=0.0)
    assert d.sequence == 2 and d.missed == 2 and d.image_png == b"png0" and d.image_sequence == 0
    q.put(dec(3), now=0.0)
    assert q.pop(now=0.0).image_png is None  # handed over once


@pytest.mark.parametrize("unit,factor", [("T", 1.0), ("fT", 1e-15), ("fT/cm", 1e-13), ("T/m", 1.0), ("uV", 1e-6),
                                         ("-15", 1e-15), ("0", 1.0), ("", 1.0), ("n/a", 1.0), ("microvolts", 1e-6)])
def test_units_as_the_service_reads_them(unit, factor):
    assert unit_factor(unit) == pytest.approx(factor)


@pytest.mark.parametrize("unit", ["0_0", "٣", "-7", "furlongs", "T/s"])
def test_units_the_service_does_not_know(unit):
    assert unit_factor(unit) is None


def test_dataframe_columns_and_types():
    df = mdc.to_dataframe([dec(5), dec(6)])
    assert list(df["sequence"]) == [5, 6] and list(df["model"]) == ["m@1", "m@1"]
    assert df["marker"].tolist() == [None, None] and df["marker_time"].isna().all()
    empty = mdc.to_dataframe([])
    assert empty["sequence"].dtype == np.int64 and empty["window_end"].dtype == np.float64
    # on_screen_at: NaN unless a model trained for continuous use made the decoding.
    import dataclasses
    cont = dataclasses.replace(dec(7), on_screen_at=0.5)
    df = mdc.to_dataframe([dec(5), cont])
    assert df["on_screen_at"].dtype == np.float64 and np.isnan(df["on_screen_at"].iloc[0])
    assert df["on_screen_at"].iloc[1] == 0.5 and empty["on_screen_at"].dtype == np.float64
    assert df["onset"].dtype == np.float64 and empty["onset"].dtype == np.float64
