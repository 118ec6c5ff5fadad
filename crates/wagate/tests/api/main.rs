//! API tests: each starts the real gateway on port 0 with a fresh database.

mod auth;
mod crash;
mod emulator;
mod events;
mod hardening;
mod helpers;
mod messages;
mod messages_crash;
mod receiver;
mod sessions;
mod tenancy;
mod wa_messaging;
mod webhooks;
mod webhooks_crash;
mod whatsapp;
