"""The service's parts, built once at start and reached from handlers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from quart import current_app

from .accounts.service import AccountService
from .badges.service import BadgeService
from .bus import FeedBus, FeedHub
from .catalog.memory import Catalog
from .catalog.service import CatalogService
from .cluster.node import Cluster
from .config import Settings
from .content.service import ContentService
from .db import Database
from .gbfs.service import GbfsService
from .maintenance.automatic import StationWatch
from .maintenance.live import LiveMaintenance
from .maintenance.service import MaintenanceService
from .payments.service import PaymentService
from .payments.worker import PaymentWorker
from .rents.book import PgRentBook
from .rents.service import RentService
from .services.access import AccessCache
from .services.mail import MailSender
from .services.passwords import Passwords
from .services.ratelimit import RateLimiter, SharedRateLimiter
from .services.secrets import SecretBox
from .services.social import SocialVerifier
from .services.tokens import TokenSigner
from .stations.service import StationService
from .support.agents import SupportAgents
from .support.service import SupportService
from .uow import Work
from .vehicles.service import VehicleService


@dataclass
class Services:
    settings: Settings
    db: Database
    signer: TokenSigner
    limiter: RateLimiter
    box: SecretBox
    mail: MailSender
    social: SocialVerifier
    bus: FeedBus
    work: Work
    hub: FeedHub
    stations: StationService
    vehicles: VehicleService
    catalog: Catalog
    catalog_service: CatalogService
    access: AccessCache
    accounts: AccountService
    content: ContentService
    rents: RentService
    badges: BadgeService
    payments: PaymentService
    payment_worker: PaymentWorker
    support: SupportService
    agents: SupportAgents
    maintenance: MaintenanceService
    maintenance_live: LiveMaintenance  # the open maintenances' effects and counts (rows 56-57)
    maintenance_watch: StationWatch  # the maintenances the stations open and resolve themselves
    gbfs: GbfsService  # the public GBFS feeds, from memory
    cluster: Cluster | None = None  # several processes on the database (``Settings.cluster``)

    @classmethod
    def build(cls, settings: Settings, db: Database, *, passwords: Passwords | None = None) -> Services:
        bus = FeedBus(
            db, queue_capacity=settings.feed_queue_capacity, retention=timedelta(hours=settings.feed_retention_hours)
        )
        work = Work(db, bus)
        payments = PaymentService(work, settings.stripe)
        provider = payments.provider  # one Stripe client (one connection pool) for the routes and the jobs
        payment_worker = PaymentWorker(
            work, provider, poll_seconds=settings.payment_poll_seconds, lease_seconds=settings.payment_lease_seconds,
            retry_seconds=settings.payment_retry_seconds, warn_within=timedelta(hours=settings.guarantee_warn_hours),
        )
        rent_book = PgRentBook(
            work, guarantees=provider is not None, guarantee_margin=timedelta(hours=settings.guarantee_margin_hours),
            on_payment_job=payment_worker.wake,
        )
        vehicles = VehicleService(
            db, work, idle_after=settings.vehicle_idle_seconds, rents=rent_book,
            unlock_timeout=settings.rent_unlock_seconds, call_timeout=settings.vehicle_call_timeout,
            status_interval=settings.vehicle_status_seconds,
        )
        catalog = Catalog(db, vehicles)
        catalog_service = CatalogService(db, work, catalog)
        vehicles.zones = catalog_service  # the speed zones the rented vehicles are told of
        stations = StationService(
            work, vehicles, heartbeat_interval=settings.station_heartbeat_seconds,
            call_timeout=settings.station_call_timeout, ping_interval=settings.station_ping_seconds,
            settings=settings,
        )
        badges = BadgeService(work, stations, settings.secret_key)
        stations.badges = badges  # the station actors hand it what their readers see
        signer = TokenSigner(settings.secret_key, access_seconds=settings.access_token_seconds)
        passwords = passwords or Passwords()
        box = SecretBox(settings.secret_key)
        mail = MailSender(
            db, settings.smtp_url, settings.mail_from,
            retry_seconds=settings.mail_retry_seconds, max_attempts=settings.mail_max_attempts,
            poll_seconds=settings.mail_poll_seconds,
            ca_file=settings.smtp_ca_file,
        )
        hub = FeedHub()
        access = AccessCache()
        rents = RentService(
            work, catalog, stations, vehicles, access, book=rent_book,
            unlock_metres=settings.free_floating_unlock_metres,
        )
        badges.unlocker = rents  # a badge shown with no link waiting starts or resumes its user's rent
        support = SupportService(work, catalog, access, idle_after=settings.chat_idle_seconds)
        agents = SupportAgents(db, work, catalog, hub, mail, settings.public_url)
        support.store.on_support_message = agents.mail_rider_if_offline  # the offline rider's mail
        maintenance = MaintenanceService(work)
        maintenance_live = LiveMaintenance(maintenance, stations, vehicles)  # its after-change hook
        maintenance_watch = StationWatch(
            maintenance, stations, vehicles, offline_after=settings.station_offline_maintenance_seconds
        )
        maintenance_watch.live = maintenance_live
        accounts = AccountService(
            db, work, settings=settings, signer=signer, passwords=passwords, box=box, mail=mail, hub=hub,
            access=access,
        )
        cluster = None
        if settings.cluster:
            cluster = Cluster(db, bus)
            stations.join(cluster)
            rents.join(cluster)
            cluster.on_sessions_revoked = accounts.sessions_revoked
            cluster.on_catalog_changed = catalog.changed_elsewhere
            cluster.on_access_changed = lambda user_id: access.forget_all() if user_id is None else access.forget(
                user_id)

            def rejoined() -> None:  # revocations and changes told while the link was down are lost: forget all
                accounts.forget_sessions()
                access.forget_all()

            cluster.on_rejoined = rejoined
        return cls(
            settings=settings,
            db=db,
            signer=signer,
            limiter=SharedRateLimiter(db) if settings.cluster else RateLimiter(),
            box=box,
            mail=mail,
            social=SocialVerifier(settings.social),
            bus=bus,
            work=work,
            hub=hub,
            stations=stations,
            vehicles=vehicles,
            catalog=catalog,
            catalog_service=catalog_service,
            access=access,
            accounts=accounts,
            content=ContentService(db, work),
            rents=rents,
            badges=badges,
            payments=payments,
            payment_worker=payment_worker,
            support=support,
            agents=agents,
            maintenance=maintenance,
            maintenance_live=maintenance_live,
            maintenance_watch=maintenance_watch,
            gbfs=GbfsService(db, catalog, stations.live, vehicles, base_url=settings.public_url,
                             contact_email=settings.mail_from),
            cluster=cluster,
        )


def services() -> Services:
    found: Services = current_app.extensions["knot"]
    return found
