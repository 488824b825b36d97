"""A1111 ``modules.deepbooru``: ``model``, the DeepDanbooru tagger of the bound app (``model.tag(pil)``, the tags
``/sdapi/v1/interrogate`` model "deepdanbooru" answers; ``tag_multi(pil, force_disable_ranks=False)`` between
``start()`` and ``stop()`` for many images; ``load()``). A missing model file raises InterrogatorUnavailable naming it.
"""

from __future__ import annotations

from webui.compat import binding


class _DeepDanbooru:
    def _tagger(self):
        return binding.current().interrogators.deepbooru()

    def load(self) -> None:
        self._tagger().load()

    def start(self) -> None:
        self._tagger().start()

    def stop(self) -> None:
        self._tagger().stop()

    def tag(self, pil_image) -> str:
        return self._tagger().tag(pil_image)

    def tag_multi(self, pil_image, force_disable_ranks: bool = False) -> str:
        return self._tagger().tag_multi(pil_image, force_disable_ranks=force_disable_ranks)


model = _DeepDanbooru()
