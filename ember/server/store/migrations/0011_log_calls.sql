-- 11: each line's call (the FunctionCall of the input that printed it; '' for lines printed
-- outside any input and for the control plane's own without one), to read one call's lines.

ALTER TABLE logs ADD COLUMN call_id TEXT NOT NULL DEFAULT '';

