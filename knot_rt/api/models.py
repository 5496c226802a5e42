"""Pydantic shapes shared by several sections of the API (field names are the spec's)."""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ..web.inputs import INT64_MAX, int_fault

T = TypeVar("T")

#: An ISO 639-1 language code, either case (the spec's user ``lang``: ``/^[a-zA-Z]{2}$/``).
Lang = Annotated[str, StringConstraints(pattern=r"^[a-zA-Z]{2}$")]
#: The same, lower case only: the consents route's ``lang`` as its contract writes it (``^[a-z]{2}$``).
LowercaseLang = Annotated[str, StringConstraints(pattern=r"^[a-z]{2}$")]
#: A new password (register, reset).
Password = Annotated[str, StringConstraints(min_length=8, max_length=255)]
#: The account's current password, as given to confirm a sensitive change.
CurrentPassword = Annotated[str, StringConstraints(min_length=1, max_length=255)]
#: A code of the OTP app.
OtpCode = Annotated[str, StringConstraints(pattern=r"^\d{6}$")]

CURRENT_PASSWORD_FIELD = Field(
    default=None,
    description="The account's current password. Required when the account has one (400 code 2 when missing, "
    "401 code 8 when wrong). A social-only account (no password) leaves it out and must have logged in "
    "within the last 5 minutes, or give a current 2FA code in `mfa_token` where the route takes one. "
    "Optional in the schema because the contract's clients and social-only accounts send none.",
)
AppLabelName = Annotated[str, StringConstraints(min_length=1, max_length=20)]
Scope = Literal["app", "dashboard"]


class Body(BaseModel):
    """A request body: unknown fields are ignored, never used."""

    model_config = ConfigDict(extra="ignore")


class IdentityBody(Body):
    """A body of a sensitive change: the caller proves again who they are with the current password.

    One declaration for every route that re-authenticates (``web/auth.confirm_identity``), so the
    field's rules and description cannot drift between them.
    """

    password: CurrentPassword | None = CURRENT_PASSWORD_FIELD


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
    """A query string: unknown parameters are ignored; no integer beyond 64 bits, whatever the field.

    (Text is checked before any model, in ``web.inputs``; bodies' integers too.)
    """

    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="after")
    @classmethod
    def _within_64_bits(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, int) and not isinstance(item, bool):
                fault = int_fault(item)
                if fault is not None:
                    raise ValueError(fault)
        return value


Positive = Annotated[int, Field(ge=1, le=INT64_MAX)]
