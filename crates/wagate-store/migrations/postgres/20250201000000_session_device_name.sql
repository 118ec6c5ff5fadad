-- Per-session linked-device name (shown on the phone under Linked devices).
-- NULL means the gateway-wide default (WAGATE_WA_DEVICE_NAME).
ALTER TABLE sessions ADD COLUMN device_name TEXT;
