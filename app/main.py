"""The composition root: settings -> faust.App, codecs, topics from topology/, tables, agents, views."""

from __future__ import annotations

import gc
from typing import Any

import faust

from app import consumerloop, fastfetch, handoff, seekfix
from app.codecs import register_faust_codecs
from app.fulfillment import agents as fulfillment_agents
from app.fulfillment import views as fulfillment_views
from app.ops import backlog, reconcile
from app.ops import views as ops_views
from app.ops.metrics import Metrics
from app.orders import agents as order_agents
from app.orders import views as order_views
from app.payments import agents as payment_agents
from app.payments import views as payment_views
from app.producer import AckedProducer, BatchProducer, GroupedProducer, UnitProducer
from app.runtime import Runtime
from app.settings import Settings, load_settings
from app.topology import CONSUMED, GLOBAL_TABLES, TABLES, TopicSpec, effective, load_topology


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Faust's own configuration, derived from Postroom's settings."""
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "store": settings.store,
        "datadir": str(settings.data_dir),
        "web_host": settings.web_host,
        "web_port": settings.web_port,
        "web_bind": settings.web_host,
        "canonical_url": settings.web_url,
        # Table contents are not published on the web; the API is the only window on them.
        "web_tables_enabled": False,
        "web_application_options": {"client_max_size": settings.max_body_bytes + 1},
        # Topics come from topology/ (python -m app topology apply), never from Faust.
        "topic_allow_declare": False,
        "topic_disable_leader": False,
        "table_standby_replicas": 0,
        "consumer_auto_offset_reset": "earliest",
        "producer_acks": -1,
        "producer_linger": settings.producer_linger_ms / 1000,
        "producer_max_batch_size": 256 * 1024,
        "broker_commit_interval": settings.commit_interval_s,
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": settings.session_timeout_s / 3,
        "key_serializer": "raw",
        "value_serializer": "raw",
        "autodiscover": False,
    }


MIB = 1024 * 1024


GC_THRESHOLDS = (20_000, 20, 20)  # Python's own: (700, 10, 10)


def settle_heap() -> None:
    """Take what the process has built so far (modules, the app, its agents and tables) out
    of the cyclic garbage collector's sight, and let it run less often. Almost everything a
    worker allocates afterwards (decoded records and states) is freed by reference counting
    alone; at Python's thresholds the collector still ran hundreds of times a minute, each
    pass walking the long-lived objects again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def use_event_loop(name: str) -> None:
    """Make ``name`` ("uvloop" or "aio") the event loop of every thread that creates one from
    now on: the worker's (and its consumer thread's, with POSTROOM_CONSUMER_THREAD). uvloop's
    loop turns faster than asyncio's, which counts here because the worker wakes for every
    fetch, hand-over and commit."""
    if name == "uvloop":
        import mode.loop

        mode.loop.use("uvloop")


def table_options(settings: Settings) -> dict[str, Any]:
    """RocksDB sizes per table partition. Faust's defaults (64 MiB x 3 memtables, a 2 GiB
    cache, for each of the dozens of partition databases) let memory grow for a long time;
    the cache and the memtables' total are shared instead (:func:`share_table_memory`)."""
    return {
        "write_buffer_size": settings.table_write_buffer_mb * MIB,
        "max_write_buffer_number": 2,
    }


_SHARED_MEMORY: list[Any] = []


def share_table_memory(total_mb: int) -> None:
    """Give every table partition's RocksDB one block cache and one write-buffer manager
    that charges the memtables to that cache, so all the stores together stay within
    ``total_mb`` however many partitions the worker holds (Faust opens one database per
    partition, each with its own cache). Installed once per process, before the app opens a
    store.

    The index and filter blocks of the tables' files are kept in that cache too. RocksDB
    holds them outside it by default, one set per file, so their memory grows with the
    tables (every order ever taken stays in ``order_by_id``). Those of the newest files
    (level 0, read most) are pinned there, so reads of recent keys never wait for them."""
    if _SHARED_MEMORY:
        return
    import rocksdict
    from faust.stores.rocksdb import RocksDBOptions

    cache = rocksdict.Cache(total_mb * MIB)
    manager = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
        total_mb * MIB, False, cache)
    _SHARED_MEMORY.extend((cache, manager))  # kept alive for the process's lifetime
    faust_options = RocksDBOptions.as_options

    def as_options(self: Any) -> Any:
        options = faust_options(self)
        table = rocksdict.BlockBasedOptions()  # Faust's, with the shared cache
        table.set_bloom_filter(self.bloom_filter_size, block_based=True)
        table.set_block_cache(cache)
        table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
        table.set_cache_index_and_filter_blocks(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        options.set_write_buffer_manager(manager)
        return options

    RocksDBOptions.as_options = as_options  # type: ignore[method-assign]


def side_fetcher(settings: Settings, specs: dict[str, TopicSpec]) -> fastfetch.SideFetcher | None:
    """What fetches the agents' topics: librdkafka (the default), or None for Faust's own
    consumer (``POSTROOM_FETCHER=aiokafka``)."""
    if settings.fetcher != "librdkafka":
        return None
    return fastfetch.SideFetcher(settings.kafka_bootstrap, f"{settings.app_id}-fetcher",
                                 (specs[name].name for name in CONSUMED),
                                 settings.fetch_max_wait_ms)


def worker_producer(settings: Settings) -> UnitProducer:
    """What sends the units' records: the grouped producer over aiokafka's client, one produce
    request for every partition a unit touches (the default), or librdkafka, a request per
    partition (``POSTROOM_PRODUCER=librdkafka``)."""
    if settings.producer == "aiokafka":
        return GroupedProducer(settings.kafka_bootstrap)
    return BatchProducer(settings.kafka_bootstrap, **{"linger.ms": settings.producer_linger_ms})


def create_app(settings: Settings | None = None) -> tuple[faust.App, Runtime]:
    """Build the whole service; nothing connects until the worker starts."""
    settings = settings or load_settings()
    seekfix.install(settings.fetch_max_wait_ms)
    specs = {name: effective(spec, settings) for name, spec in load_topology().items()}
    handoff.install()
    if not settings.consumer_thread:
        consumerloop.install()
    share_table_memory(settings.table_memory_mb)
    app = faust.App(settings.app_id, **faust_settings(settings))
    side = side_fetcher(settings, specs)
    if side is not None:
        fastfetch.attach(app, side)
    metrics = Metrics()
    rt = Runtime(settings=settings, app=app, specs=specs, metrics=metrics)

    codec_names = register_faust_codecs(
        {name: spec.schemas for name, spec in specs.items() if spec.schemas}
    )
    for name, spec in specs.items():
        if spec.table or name.endswith("__leader"):
            continue
        rt.topics[name] = app.topic(
            spec.name,
            partitions=spec.partitions,
            key_serializer="raw",
            value_serializer=codec_names.get(name, "raw"),
        )
    for name in CONSUMED:
        rt.sources[name] = rt.raw_topic(name)
    for table, source in TABLES.items():
        rt.tables[table] = app.Table(
            table,
            partitions=specs[source].partitions,
            schema=faust.Schema(key_serializer="raw", value_serializer="json"),
            options=table_options(settings),
        )
    for table, source in GLOBAL_TABLES.items():
        # One partition and a recovery buffer of one: Faust's advice for global tables.
        rt.tables[table] = app.GlobalTable(
            table,
            partitions=specs[source].partitions,
            schema=faust.Schema(key_serializer="raw", value_serializer="json"),
            options=table_options(settings),
            recovery_buffer_size=1,
        )

    if settings.prometheus_sensor:
        from faust.sensors.prometheus import setup_prometheus_sensors

        setup_prometheus_sensors(
            app, pattern="/metrics/faust", registry=metrics.registry, name_prefix="postroom_faust"
        )

    order_agents.register(rt)
    fulfillment_agents.register(rt)
    payment_agents.register(rt)
    order_views.register(rt)
    fulfillment_views.register(rt)
    payment_views.register(rt)
    ops_views.register(rt)
    reconcile.register(rt)
    backlog.register(rt)

    async def close_frontdesk(sender: Any, *args: Any, **kwargs: Any) -> None:
        if side is not None:
            side.close()
        if rt.producer is not None:
            rt.producer.close()
        if rt.batches is not None:
            await rt.batches.stop()

    app.on_before_shutdown.connect(close_frontdesk)  # type: ignore[arg-type]

    rt.producer = AckedProducer(settings.kafka_bootstrap)
    rt.batches = worker_producer(settings)
    return app, rt
