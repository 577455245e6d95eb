"""Faust's Kafka consumer runs on the worker's event loop (app/consumerloop.py)."""

import asyncio

import faust

from app import consumerloop


async def test_the_consumer_runs_on_the_apps_loop_and_calls_into_it_are_plain_awaits() -> None:
    consumerloop.install()
    app = faust.App("consumerloop-test", broker="kafka://127.0.0.1:1")  # never connected
    thread = app.consumer._thread  # built here, not started
    loop = asyncio.get_running_loop()
    assert thread.thread_loop is thread.parent_loop is loop
    assert thread._close_thread_loop_on_stop is False  # the worker's loop stays open

    async def where() -> object:
        return asyncio.get_running_loop()

    assert await thread.call_thread(where) is loop
    assert await thread.call_thread(lambda: 42) == 42  # a plain function too
