"""Spillgate's llama.cpp engine: one GGUF model behind the OpenAI protocol, in its own process.

Started as `spillgate engine llamacpp …` or `python -m spillgate.engines.llamacpp …`
(`main.run(argv)`). Unlike llama-cpp-python's bundled server it batches continuously: up to
`--max-batch` sequences share one context and one `llama_decode` per step, further requests
wait FIFO in a queue of `--max-queue` (then 429 + Retry-After), and no request is ever
cancelled because another arrived. A client that disconnects frees its slot at once.

Routes: POST /v1/chat/completions, /v1/completions (plain and SSE), /v1/embeddings (400
`embeddings_not_supported`), GET /v1/models, /health, /metrics.

The decode loop runs in a thread of the HTTP process by default (`--decoder thread`;
scheduler.py). With `--decoder process` (decoder.py) it runs in a child process: the HTTP
process keeps a vocabulary-only model for tokenizing and exchanges one pipe message per
decode step with it, so the event loop never competes with decoding for the GIL.

Modules: model (C API wrapper), scheduler (decode thread), tickets (jobs, chunks, hand-off),
decoder (the decode process and its HTTP-side proxy), prefix (a slot's cells reused by the
next request's shared prompt prefix), textstream (UTF-8 + stop strings),
logprobs (token log-probabilities and their OpenAI shapes), chat (GGUF chat template), bodies
(request validation), service (request → job), shapes (OpenAI bodies and SSE), metrics,
app (routes), main (CLI).

Prometheus metrics (own CollectorRegistry), scraped by spillgate.telemetry.engine_metrics:
    spillgate_engine_requests_running               gauge      sequences being decoded
    spillgate_engine_requests_waiting               gauge      requests queued for a slot
    spillgate_engine_queue_capacity                 gauge      --max-queue
    spillgate_engine_batch_capacity                 gauge      --max-batch
    spillgate_engine_prompt_tokens_total            counter    prompt tokens processed
    spillgate_engine_prompt_tokens_cached_total     counter    of those, reused (prefix.py)
    spillgate_engine_generation_tokens_total        counter    tokens generated
    spillgate_engine_time_to_first_token_seconds    histogram  arrival → first token
    spillgate_engine_request_queue_time_seconds     histogram  arrival → slot
    spillgate_engine_e2e_request_latency_seconds    histogram  arrival → last token
    spillgate_engine_request_success_total          counter    {finish_reason="stop"|"length"}
    spillgate_engine_requests_aborted_total         counter    client went away
    spillgate_engine_requests_rejected_total        counter    429, queue full

Prompt and completion text are never logged.
"""
