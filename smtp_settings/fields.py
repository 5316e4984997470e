"""A model field that keeps its value encrypted at rest.

The key is derived from SECRET_KEY (and SECRET_KEY_FALLBACKS, so values written under an
old key still open after a rotation). Python code always sees plaintext; the database only
ever holds Fernet tokens. Because the field itself encrypts, every code path that saves a
model (forms, admin, shell, fixtures) stores ciphertext.
"""

import base64
import logging
from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import models

logger = logging.getLogger(__name__)


def _fernet_key(secret: str) -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"relaydeck.encrypted-field")
    return base64.urlsafe_b64encode(hkdf.derive(secret.encode()))


@cache
def _fernet(secret_key: str, fallbacks: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(key)) for key in (secret_key, *fallbacks)])


def get_fernet() -> MultiFernet:
    return _fernet(settings.SECRET_KEY, tuple(settings.SECRET_KEY_FALLBACKS))


def encrypt(plaintext: str) -> str:
    return get_fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return get_fernet().decrypt(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """Text stored as a Fernet token; the empty string is stored as it is."""

    def from_db_value(self, value, expression, connection):
        if not value:
            return value
        try:
            return decrypt(value)
        except InvalidToken:
            # Written under a SECRET_KEY that is neither current nor a fallback: the secret
            # is lost, and saying so beats failing every page that lists the row.
            logger.warning("%s could not be decrypted; was SECRET_KEY changed?", self)
            return ""

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else value
