"""The one table of error codes of the Knot application API.

Every JSON response carries an integer ``code``; 0 is success. Each error has a
fixed HTTP status and a default English message. The OpenAPI document lists this
table, and the feed and station gateway reuse the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class ErrorCode(IntEnum):
    SUCCESS = 0
    INTERNAL = 1
    INVALID_INPUT = 2
    INVALID_TOKEN = 3
    NOT_FOUND = 4
    METHOD_NOT_ALLOWED = 5
    PAYLOAD_TOO_LARGE = 6
    EMAIL_NOT_CONFIRMED = 7
    WRONG_CREDENTIALS = 8
    RATE_LIMITED = 9
    EMAIL_ALREADY_USED = 10
    INVALID_EMAIL_TOKEN = 11
    UNKNOWN_APP_LABEL = 12
    NOT_ALLOWED = 13
    REFRESH_TOKEN_REUSED = 14
    INVALID_2FA_CODE = 15
    TWO_FACTOR_ALREADY_ENABLED = 16
    PROVIDER_NOT_CONFIGURED = 17
    INVALID_PROVIDER_TOKEN = 18
    EMAIL_ALREADY_CONFIRMED = 19
    SAME_EMAIL = 20
    UNKNOWN_CONSENT_TYPE = 21
    PROVIDER_UNAVAILABLE = 22
    UNSUPPORTED_MEDIA_TYPE = 23
    CONFLICT = 24
    NO_COUNTRY = 25
    DISCOUNT_UNKNOWN = 26
    DISCOUNT_ALREADY_USED = 27
    DISCOUNT_EXPIRED = 28
    DISCOUNT_NOT_AVAILABLE_HERE = 29
    VEHICLE_NOT_AVAILABLE = 30
    TOO_FAR = 31
    TOO_MANY_RENTS = 32
    GUARANTEE_REQUIRED = 33
    PAUSE_NOT_ALLOWED = 34
    RENT_STATE = 35
    WRONG_VEHICLE_KIND = 36
    LOCK_NOT_ALLOWED_HERE = 39
    DEVICE_TIMEOUT = 40
    DEVICE_REJECTED = 41
    NO_BADGE_READER = 37
    BADGE_LINK_WAITING = 38
    PAYMENT_DECLINED = 42
    PAYMENT_ACTION_REQUIRED = 43
    GUARANTEE_IN_USE = 44
    PAYMENTS_UNAVAILABLE = 45
    REPORT_CLOSED = 46
    MAINTENANCE_TYPE = 47
    SERVICE_UNAVAILABLE = 48
    DEVICE_OFFLINE = 50
    INVALID_2FA_SETUP = 60
    TWO_FACTOR_REQUIRED = 146


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    status: int
    message: str


ERRORS: dict[ErrorCode, ErrorInfo] = {
    ErrorCode.SUCCESS: ErrorInfo(200, "Success"),
    ErrorCode.INTERNAL: ErrorInfo(500, "Internal error"),
    ErrorCode.INVALID_INPUT: ErrorInfo(400, "Invalid input"),
    ErrorCode.INVALID_TOKEN: ErrorInfo(401, "Missing, invalid or expired token"),
    ErrorCode.NOT_FOUND: ErrorInfo(404, "Not found"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorInfo(405, "Method not allowed"),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorInfo(413, "Request body too large"),
    ErrorCode.EMAIL_NOT_CONFIRMED: ErrorInfo(403, "Email address not confirmed"),
    ErrorCode.WRONG_CREDENTIALS: ErrorInfo(401, "Wrong email or password"),
    ErrorCode.RATE_LIMITED: ErrorInfo(429, "Too many requests, try again later"),
    ErrorCode.EMAIL_ALREADY_USED: ErrorInfo(409, "Email address already in use"),
    ErrorCode.INVALID_EMAIL_TOKEN: ErrorInfo(400, "Invalid, used or expired email token"),
    ErrorCode.UNKNOWN_APP_LABEL: ErrorInfo(404, "Unknown app label"),
    ErrorCode.NOT_ALLOWED: ErrorInfo(403, "Not allowed"),
    ErrorCode.REFRESH_TOKEN_REUSED: ErrorInfo(401, "Refresh token already used: session revoked"),
    ErrorCode.INVALID_2FA_CODE: ErrorInfo(401, "Invalid or already used second-factor code"),
    ErrorCode.TWO_FACTOR_ALREADY_ENABLED: ErrorInfo(409, "Two-factor authentication already enabled"),
    ErrorCode.PROVIDER_NOT_CONFIGURED: ErrorInfo(501, "This login provider is not configured"),
    ErrorCode.INVALID_PROVIDER_TOKEN: ErrorInfo(401, "The provider token could not be verified"),
    ErrorCode.EMAIL_ALREADY_CONFIRMED: ErrorInfo(409, "Email address already confirmed"),
    ErrorCode.SAME_EMAIL: ErrorInfo(400, "The new email address is the current one"),
    ErrorCode.UNKNOWN_CONSENT_TYPE: ErrorInfo(400, "Unknown consent type"),
    ErrorCode.PROVIDER_UNAVAILABLE: ErrorInfo(502, "The login provider could not be reached"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorInfo(415, "Expected a JSON body"),
    ErrorCode.CONFLICT: ErrorInfo(409, "Conflict"),
    ErrorCode.NO_COUNTRY: ErrorInfo(404, "No country at this position"),
    ErrorCode.DISCOUNT_UNKNOWN: ErrorInfo(404, "Unknown discount code"),
    ErrorCode.DISCOUNT_ALREADY_USED: ErrorInfo(409, "Discount code already used"),
    ErrorCode.DISCOUNT_EXPIRED: ErrorInfo(410, "Discount code expired"),
    ErrorCode.DISCOUNT_NOT_AVAILABLE_HERE: ErrorInfo(403, "Discount not available on this network"),
    ErrorCode.VEHICLE_NOT_AVAILABLE: ErrorInfo(409, "Vehicle not available"),
    ErrorCode.TOO_FAR: ErrorInfo(403, "Too far from the vehicle"),
    ErrorCode.TOO_MANY_RENTS: ErrorInfo(409, "Too many ongoing rents on this network"),
    ErrorCode.GUARANTEE_REQUIRED: ErrorInfo(402, "A bank guarantee is required on this network"),
    ErrorCode.PAUSE_NOT_ALLOWED: ErrorInfo(403, "Pausing a trip is not allowed on this network"),
    ErrorCode.RENT_STATE: ErrorInfo(409, "The rent is not in a state that allows this"),
    ErrorCode.WRONG_VEHICLE_KIND: ErrorInfo(409, "Not possible with this kind of vehicle (docked or free-floating)"),
    ErrorCode.LOCK_NOT_ALLOWED_HERE: ErrorInfo(403, "The vehicle may not be locked here"),
    ErrorCode.DEVICE_TIMEOUT: ErrorInfo(504, "The device did not answer in time"),
    ErrorCode.DEVICE_REJECTED: ErrorInfo(409, "The device rejected the command"),
    ErrorCode.NO_BADGE_READER: ErrorInfo(409, "No badge reader there (a cluster without one, or a v6 station "
                                              "without spot_id)"),
    ErrorCode.BADGE_LINK_WAITING: ErrorInfo(409, "A badge link is already waiting at that reader"),
    ErrorCode.PAYMENT_DECLINED: ErrorInfo(402, "The payment provider declined the hold"),
    ErrorCode.PAYMENT_ACTION_REQUIRED: ErrorInfo(402, "The hold needs the customer's action (3-D Secure)"),
    ErrorCode.GUARANTEE_IN_USE: ErrorInfo(409, "The guarantee is used by an ongoing rent"),
    # 501 when payments are not configured; 502 (given by the raiser) when the provider cannot be reached.
    ErrorCode.PAYMENTS_UNAVAILABLE: ErrorInfo(501, "Payments are not available"),
    ErrorCode.REPORT_CLOSED: ErrorInfo(409, "The report is resolved and may not be reopened by writing"),
    ErrorCode.MAINTENANCE_TYPE: ErrorInfo(400, "Unknown maintenance type, or a type for another target"),
    ErrorCode.SERVICE_UNAVAILABLE: ErrorInfo(503, "The service is temporarily unavailable, try again shortly"),
    ErrorCode.DEVICE_OFFLINE: ErrorInfo(503, "The device is offline"),
    ErrorCode.INVALID_2FA_SETUP: ErrorInfo(400, "Invalid or expired two-factor setup token"),
    ErrorCode.TWO_FACTOR_REQUIRED: ErrorInfo(401, "Second factor required"),
}


def error_table() -> list[dict[str, object]]:
    """The table as data, for documentation."""
    return [
        {"code": int(code), "status": info.status, "name": code.name.lower(), "message": info.message}
        for code, info in sorted(ERRORS.items())
    ]
