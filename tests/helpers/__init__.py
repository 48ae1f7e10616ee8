"""Builders the tests share: tiny models and checkpoints, reference implementations,
data fixtures and the multi-host worker. ``REPO`` is the repository root."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
