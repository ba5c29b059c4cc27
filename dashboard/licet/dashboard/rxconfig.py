"""Reflex configuration of the Licet dashboard (the frontend build reads it; `licet serve` loads it too)."""

import reflex as rx

config = rx.Config(
    app_name="dashboard",
    app_module_import="licet.dashboard.app",
    show_built_with_reflex=False,
    telemetry_enabled=False,
    # Never the default "*", which echoes any Origin with credentials (reflex notes, gotcha 4);
    cors_allowed_origins=["http://localhost:8000"],  # `licet serve` sets the origins it serves
    api_url="http://localhost:8000",  # dashboard/build.py makes the built frontend use its own origin
    plugins=[rx.plugins.RadixThemesPlugin()],
    disable_plugins=[rx.plugins.SitemapPlugin],
)
