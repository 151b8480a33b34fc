from __future__ import annotations

import pytest
from pydantic import ValidationError

from codeprm.services.executor.settings import ExecutorSettings
from codeprm.services.labeler.settings import LabelerSettings
from codeprm.services.prm_server.settings import PrmSettings


def test_each_service_reads_its_own_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEPRM_EXECUTOR_PORT", "9100")
    monkeypatch.setenv("CODEPRM_PRM_PORT", "9101")
    monkeypatch.setenv("CODEPRM_PRM_DEVICE", "cpu")
    assert ExecutorSettings().port == 9100
    prm = PrmSettings()
    assert (prm.port, prm.device) == (9101, "cpu")
    assert LabelerSettings().port == 8102  # untouched by the others' variables


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEPRM_EXECUTOR_PORT", "9100")
    assert ExecutorSettings(port=9200).port == 9200


def test_redis_url_honours_conventional_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/3")
    assert LabelerSettings().redis_url == "redis://elsewhere:6379/3"
    monkeypatch.setenv("CODEPRM_LABELER_REDIS_URL", "redis://mine:6379/1")
    assert LabelerSettings().redis_url == "redis://mine:6379/1"


def test_bad_values_are_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEPRM_EXECUTOR_PORT", "70000")
    with pytest.raises(ValidationError):
        ExecutorSettings()
    with pytest.raises(ValidationError):
        ExecutorSettings(log_level="loud")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ExecutorSettings(no_such_setting=1)  # type: ignore[call-arg]
