"""`executors: {ray: ...}` in tacx.yaml: where the Ray cluster's job server is, what each
provider's jobs ask Ray for (Ray places them), and how remote stages reach their workspace.
Pure settings: importing this never imports Ray."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from tacx.durations import setting_duration

DEFAULT_ADDRESS = "http://127.0.0.1:8265"

_Duration = Annotated[float, BeforeValidator(setting_duration)]


class RayResources(BaseModel):
    """What one job of a provider asks Ray for: Ray starts it on a node that has them free."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: float | None = Field(default=None, ge=0, description="CPUs the job holds on its node")
    num_gpus: float | None = Field(default=None, ge=0, description="GPUs the job holds on its node")
    memory: int | None = Field(default=None, ge=0, description="bytes of memory the job holds on its node")
    resources: dict[str, float] = Field(default_factory=dict, description="custom resources, e.g. {agent: 1}")

    def submit_args(self) -> dict[str, object]:
        """As JobSubmissionClient.submit_job takes them."""
        args: dict[str, object] = {}
        if self.num_cpus is not None:
            args["entrypoint_num_cpus"] = self.num_cpus
        if self.num_gpus is not None:
            args["entrypoint_num_gpus"] = self.num_gpus
        if self.memory is not None:
            args["entrypoint_memory"] = self.memory
        if self.resources:
            args["entrypoint_resources"] = dict(self.resources)
        return args


class RaySettings(BaseModel):
    """The Ray cluster stages with `executor: ray` run on."""

    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(
        default=None,
        description="the cluster's job server (its dashboard address), e.g. http://head:8265; "
        "default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS when it is an http(s) address, else " + DEFAULT_ADDRESS,
    )
    resources: dict[str, RayResources] = Field(
        default_factory=dict, description="per provider (or `default`): what its jobs ask Ray for"
    )
    remote: str = Field(
        default="origin",
        description="the git remote (a name in the project, or a URL) nodes clone a worktree stage's branch "
        "from and push it back to",
    )
    shared_filesystem: bool = Field(
        default=False,
        description="every node sees the project and the tacx home at the same paths (dir and none "
        "workspaces need this)",
    )
    python: str = Field(default="python3", description="the Python on the nodes that runs tacx's node runner")
    lost_after: _Duration = Field(
        default=30.0, description="how long the cluster may not answer before its running stages fail"
    )

    @field_validator("address")
    @classmethod
    def _http_address(cls, value: str | None) -> str | None:
        """Ray's client takes anything else for another service: a bare host:port for a GCS (it
        waits 40 s for one), ray:// for Ray Client (it starts a driver that prints to the terminal)."""
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not the Ray job server's address: give its dashboard's http(s) "
                             "address, e.g. http://head:8265")
        return value

    def job_server(self) -> str:
        """The address JobSubmissionClient is given."""
        if self.address:
            return self.address
        for name in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):
            value = os.environ.get(name, "")
            if value.startswith(("http://", "https://")):
                return value
        return DEFAULT_ADDRESS

    def resources_for(self, provider: str) -> RayResources:
        return self.resources.get(provider) or self.resources.get("default") or RayResources()


class ExecutorSettings(BaseModel):
    """The executors beside the local one."""

    model_config = ConfigDict(extra="forbid")
    ray: RaySettings | None = None
