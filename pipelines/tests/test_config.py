"""The pipeline's settings: W&B goes online only with an API key, and a bad mode names WANDB_MODE."""

from __future__ import annotations

import pytest

from finpredict.common.config import ConfigError, load_settings
from finpredict.pipelines.config import WandbSettings


@pytest.mark.parametrize(
    ("mode", "api_key", "expected"),
    [
        (None, None, "offline"),
        (None, "k", "online"),
        ("online", None, "offline"),  # online needs a key
        (" Online ", "k", "online"),
        ("offline", "k", "offline"),
        ("dryrun", "k", "offline"),
        ("disabled", "k", "disabled"),
    ],
)
def test_wandb_mode(
    monkeypatch: pytest.MonkeyPatch, mode: str | None, api_key: str | None, expected: str
) -> None:
    for name, value in (("WANDB_MODE", mode), ("WANDB_API_KEY", api_key)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert load_settings(WandbSettings).effective_mode() == expected


def test_a_bad_wandb_mode_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="WANDB_MODE='sometimes'"):
        load_settings(WandbSettings)
