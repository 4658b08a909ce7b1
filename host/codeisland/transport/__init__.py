"""Transports to the SMM driver: the interface, and the mailbox client built on it."""

from .base import Transport
from .mailbox import MailboxClient, Reply

__all__ = ["MailboxClient", "Reply", "Transport"]
