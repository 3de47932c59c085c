"""streamprune.bench: benchmark suites behind `streamprune bench`.

runner (resumable, shardable units; merge), suites (registry + CLI glue), features (model-free quality on
real EfficientNet / pixel features), scaling (prefill cost vs video length), qa (video QA datasets),
frames (sample clips, long synthetic videos with needles, feature extractors), metrics, streams,
memtrack (CPU peak tensor memory), report (tables), plots (PNG).
"""
