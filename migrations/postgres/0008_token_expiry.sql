-- API tokens may expire, and say when they were last used (Unix milliseconds, NULL for
-- never). A token past `expires_at` is refused with its own error (`token_expired`);
-- `last_used_at` is written at most once a minute per token (tokens::touch), so reads
-- do not turn into a write each. Kept equivalent across engines like 0001.
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
