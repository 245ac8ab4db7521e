-- 11: each line's call (the FunctionCall of the input that printed it; '' for lines printed
-- outside any input and for the control plane's own without one), to read one call's lines.
-- They are read by app (its lines in seq order, the key's), then filtered, as by function or
-- container: an index of calls would cost each line stored a third more.

ALTER TABLE logs ADD COLUMN call_id TEXT NOT NULL DEFAULT '';

-- No query reads lines by the name of their app (a name's versions are found in apps, and their
-- lines by app id); keeping this index up cost a fifth of what storing a line does.
DROP INDEX logs_by_name;
