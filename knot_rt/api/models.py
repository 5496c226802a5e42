"""Pydantic shapes shared by several sections of the API (field names are the spec's)."""

from __future__ import annotations

from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

T = TypeVar("T")

Lang = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z]{2}$")]
AppLabelName = Annotated[str, StringConstraints(min_length=1, max_length=20)]
Scope = Literal["app", "dashboard"]


class Body(BaseModel):
    """A request body: unknown fields are ignored, never used."""

    model_config = ConfigDict(extra="ignore")


class Ok(BaseModel):
    code: int = 0


class Data(BaseModel, Generic[T]):
    code: int = 0
    data: T


class LoginDevice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: Annotated[str, StringConstraints(min_length=1, max_length=50)] | None = None
    os: Annotated[str, StringConstraints(max_length=50)] | None = None
    model: Annotated[str, StringConstraints(max_length=100)] | None = None
    app_version: Annotated[str, StringConstraints(max_length=50)] | None = None


class OuCluster(BaseModel):
    id: int
    network: int


class Ou(BaseModel):
    id: int
    networks: list[int]
    clusters: list[OuCluster]
    app_labels: list[int]
    organizations: list[int]


class PermissionOut(BaseModel):
    perm_key: str
    write: bool
    ou: Ou


class LoginResponse(BaseModel):
    code: int = 0
    token: str
    refresh_token: str
    user_id: int
    permissions: list[PermissionOut]


class PageQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")


Positive = Annotated[int, Field(ge=1)]
