"""The serving shell: ``qmlops serve`` puts champions behind the Open Inference Protocol v2 (aiohttp).
The engine never imports it."""
