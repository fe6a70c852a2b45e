"""The sources tacx.yaml asks for, made ready to poll (one per `sources:` entry)."""

from __future__ import annotations

from tacx.home import Home
from tacx.settings import Settings
from tacx.sources.base import Source
from tacx.sources.github import GitHubSource, home_id
from tacx.sources.pullrequest import open_pull


def sources_from(settings: Settings, home: Home) -> list[Source]:
    if not settings.sources:
        return []
    me = home_id(home.root)  # made once, kept in the home
    return [GitHubSource(conf, home=me, opener=open_pull) for conf in settings.sources]
