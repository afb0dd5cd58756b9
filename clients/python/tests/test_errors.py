"""The exceptions of failed jobs follow the wire: a result's class decides the family."""

from __future__ import annotations

import warren_client as w


def test_a_timeout_is_transient_or_permanent_as_its_result_says():
    transient = w.job_error({"type": "timeout", "class": "transient", "message": "60 s"}, "j1")
    permanent = w.job_error({"type": "timeout", "class": "permanent", "message": "60 s"}, "j2")
    for e in (transient, permanent):
        assert isinstance(e, w.JobTimedOut) and e.type == "timeout"
    assert isinstance(transient, w.TransientJobError) and not isinstance(transient, w.PermanentJobError)
    assert isinstance(permanent, w.PermanentJobError) and not isinstance(permanent, w.TransientJobError)
    assert permanent.error_class == "permanent"


def test_a_kinds_own_error_type_takes_the_family_of_its_class():
    e = w.job_error({"type": "sku_not_found", "class": "permanent", "message": "no item"}, "j")
    assert isinstance(e, w.PermanentJobError) and e.type == "sku_not_found"
    e = w.job_error({"type": "catalog_unavailable", "class": "transient", "message": "503"}, "j")
    assert isinstance(e, w.TransientJobError)


def test_every_other_type_keeps_its_documented_family():
    for error_type, cls in w.BY_TYPE.items():
        family = "transient" if issubclass(cls, w.TransientJobError) else "permanent"
        e = w.job_error({"type": error_type, "class": family, "message": "m"})
        assert type(e) is cls, error_type
