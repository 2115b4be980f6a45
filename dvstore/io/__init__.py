"""Importers and exporters: image headers, COCO files, Dataloop item JSON, the sample dataset.

Every module here is pure: it reads and writes plain files and returns plain values in the
store's record shapes (``dvstore.model``). None of them opens the store, imports ``lmdb``,
``msgpack`` or ``click``, or decides what becomes a version; the repository layer does that.
"""
