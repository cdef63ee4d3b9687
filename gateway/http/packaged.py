"""Every packaged endpoint (HLS, DASH, MSS, HDS): open the media set, pick the product, answer from the cache."""
from __future__ import annotations

import logging

from aiohttp import web

from ..catalog.access import DeliveryContext
from ..catalog.drm import KEY_SOURCE
from .protected import protect
from ..ops.access_log import CACHE_RESULT
from ..ops.metrics import PROMETHEUS
from ..origin.packaging import PACKAGING
from .fast_path import FastAnswers, PackagedAnswer
from .products import product_for
from .responses import serve_packaged
from ..origin.store import FileChanged
from .urls import PackagedRequest

log = logging.getLogger("gateway")
# the answer to a plain request, for gateway/http/fast_path.py (app.py remembers it when the request was not signed)
PACKAGED_ANSWER = web.RequestKey("packaged_answer", PackagedAnswer) if hasattr(web, "RequestKey") \
    else "gateway.http.packaged.answer"


async def serve_packaged_request(request: web.Request, parsed: PackagedRequest, context: DeliveryContext) -> web.Response:
    packaging = request.app[PACKAGING]
    opened = await packaging.open(parsed.target, context.segment_duration_ms)
    if context.encryption != "none":  # the keys first: a failing DRM service is a 503, never clear media
        context = await protect(request.app[KEY_SOURCE], context, opened.media_set)
    product = product_for(parsed, opened, packaging, context)
    async def body() -> bytes:
        cache = packaging.responses  # checked in the same loop step as the lookup itself: no race
        hit = cache.capacity > 0 and opened.cache_key(product.key) in cache
        request[CACHE_RESULT] = "hit" if hit else ("miss" if cache.capacity > 0 else "bypass")
        try:
            return await packaging.packaged(opened, product.key, product.build, product.build_inline,
                                            product.prefetch)
        except FileChanged as changed:
            if changed.reason != "replaced":  # changed in place while read: 503 before any header, counted
                log.warning("%s %s: %s (%s)", request.method, request.rel_url.raw_path[:200], changed, changed.reason)
                metrics = request.app.get(PROMETHEUS)
                if metrics is not None:
                    metrics.record_abort(request, changed.reason)
            raise

    response = await serve_packaged(
        request,
        body,
        content_type=product.content_type,
        etag=opened.etag(product.key),
        last_modified=opened.last_modified,
        max_age=product.max_age,
        private=product.private,
    )
    # (not for protected media: its keys come and go with the DRM service's answers, which the fast path cannot see)
    if response.status == 200 and not product.private and context.protection is None and FastAnswers.plain(request):
        headers = {k: v for k, v in response.headers.items() if k != "Content-Type"}
        request[PACKAGED_ANSWER] = PackagedAnswer(parsed.target.paths, opened.validators.file_keys,
                                                  opened.cache_key(product.key), product.content_type, headers)
    return response
