"""The training pipeline's settings, read once from the environment.

The registry address the register stage uses is the clients' one
(:class:`~finpredict.common.config.ClientSettings`, ``FINPREDICT_REGISTRY_TARGET``); what only the
pipeline reads is here: the register stage's token and trigger and the train stage's Ray cluster
(:class:`PipelineSettings`) and W&B's mode, key and folders (:class:`WandbSettings`, the
variables W&B itself reads too).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class PipelineSettings(BaseSettings):
    """Settings of the register and train stages."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_", extra="ignore", frozen=True)

    registry_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token (writer role) the pipeline's register stage sends to the registry "
        "(admin when the model does not exist yet).",
    )
    trigger: str = Field(
        default="",
        description="Why the pipeline ran, recorded in the version's lineage (empty: `register.trigger` of "
        "params.yaml, `manual`); the monitor's retraining trigger sets it for the command it starts.",
    )
    train_ray_address: str = Field(
        default="",
        description="Ray cluster the train stage runs on when `train.backend` is `ray` in params.yaml "
        "(the GCS `host:port` of `ray start --head`, or `auto`: the cluster started on this machine); "
        "empty: `auto`.",
    )


class WandbSettings(BaseSettings):
    """W&B tracking of the training pipeline: offline unless an API key says otherwise."""

    model_config = SettingsConfigDict(env_prefix="WANDB_", extra="ignore", frozen=True)

    mode: Literal["", "online", "offline", "disabled", "dryrun"] = Field(
        default="",
        description="W&B mode of the training pipeline: `offline`, `disabled`, or `online` (needs "
        "`WANDB_API_KEY`); unset: online when `WANDB_API_KEY` is set, else offline.",
    )
    api_key: SecretStr = Field(
        default=SecretStr(""),
        description="W&B API key; with it, and `WANDB_MODE` not `offline`, runs go online.",
    )
    dir: Path | None = Field(
        default=None,
        description="Where W&B writes runs (offline runs too; `wandb sync` uploads them); default `wandb` "
        "in the project.",
    )
    data_dir: Path | None = Field(
        default=None, description="W&B's data folder (artifact staging); default `wandb/data` in the project."
    )
    cache_dir: Path | None = Field(default=None, description="W&B's cache folder; default `wandb/cache`.")
    config_dir: Path | None = Field(default=None, description="W&B's config folder; default `wandb/config`.")

    @field_validator("mode", mode="before")
    @classmethod
    def _normalise_mode(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    def effective_mode(self) -> Literal["online", "offline", "disabled"]:
        """``online`` only when an API key is set and ``WANDB_MODE`` does not say otherwise."""
        if self.mode in ("offline", "dryrun"):
            return "offline"
        if self.mode == "disabled":
            return "disabled"
        return "online" if self.api_key.get_secret_value() else "offline"
