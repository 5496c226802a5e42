"""Countries: the country at a position (ROUTES row 24).

The lookup is offline, from the boundary data of ``timezonefinder`` (see
``knot_rt.services.geo``); the rows come from the catalog (``knot_rt.catalog.countries``),
read through ``svc.catalog_service``. ISO codes are answered upper case as ISO
writes them ("FR", "FRA"), though the spec's example shows "st".
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.geo import Latitude, Longitude, country_code_at
from .models import Data, PageQuery

bp = Blueprint("countries", __name__, url_prefix="/api/application/countries")


class PositionQuery(PageQuery):
    lat: Latitude = Field(description="Latitude of where to search the country.")
    lng: Longitude = Field(description="Longitude of where to search the country.")


class Country(BaseModel):
    country_id: int
    name: str
    iso_2: str = Field(description="ISO 3166-1 alpha-2 code, upper case (\"FR\").")
    iso_3: str = Field(description="ISO 3166-1 alpha-3 code, upper case (\"FRA\").")
    phone_prefix: str = Field(description="International calling code (\"+33\"); empty when the country has none.")


@bp.get("/position")
@tag(["Countries"])
@validate_querystring(PositionQuery)
@validate_response(Data[Country])
async def at_position(query_args: PositionQuery) -> Data[Country]:
    """Return a country from the given position (404 + code 25 at sea)."""
    iso_2 = await country_code_at(query_args.lat, query_args.lng)
    if iso_2 is None:
        raise ApiError(ErrorCode.NO_COUNTRY)
    code = iso_2
    row = await services().catalog_service.country(code)
    if row is None:
        raise ApiError(ErrorCode.NO_COUNTRY)
    return Data(data=Country(
        country_id=row["id"], name=row["name"], iso_2=row["iso_2"], iso_3=row["iso_3"],
        phone_prefix=row["phone_prefix"],
    ))
