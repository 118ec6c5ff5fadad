//! API tests: each starts the real gateway on port 0 with a fresh database.

mod auth;
mod crash;
mod emulator;
mod events;
mod hardening;
mod helpers;
mod receiver;
mod sessions;
mod tenancy;
mod webhooks;
mod webhooks_crash;
mod whatsapp;
