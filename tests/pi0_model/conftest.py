"""Fixtures for the pi0_model tests."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_pi0 import ALOHA_CAMERAS, make_tiny_model

from pi0_model.config import Pi0Config
from pi0_model.model import Pi0Model
from pi0_model.policy import Pi0Policy, RobotIO
from pi0_model.tokenizer import PromptTokenizer, tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_config() -> Pi0Config:
    return Pi0Config.tiny()


@pytest.fixture(scope="session")
def tiny_model() -> Pi0Model:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tokenizer() -> PromptTokenizer:
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def aloha_io() -> RobotIO:
    return RobotIO(camera_slots=ALOHA_CAMERAS, state_dim=14, action_dim=14, transforms=("aloha",))


@pytest.fixture(scope="session")
def aloha_policy(aloha_io: RobotIO) -> Pi0Policy:
    return Pi0Policy.tiny(aloha_io, seed=0)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
