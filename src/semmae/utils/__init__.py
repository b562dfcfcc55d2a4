"""Cross-cutting helpers: atomic I/O, run directories and logs, seeding, distributed setup."""
