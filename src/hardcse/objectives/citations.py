"""The BibTeX of the built-in methods, cited by their parts, heads and :class:`~hardcse.objectives.
registry.Method` objects (a loss joins the citations of its head and parts, so a composition cites
every method it is built from; the model card cites every method of the recipe)."""

from __future__ import annotations

SIMCSE_CITATION = """@inproceedings{gao2021simcse,
  title = {{SimCSE}: Simple Contrastive Learning of Sentence Embeddings},
  author = {Gao, Tianyu and Yao, Xingcheng and Chen, Danqi},
  booktitle = {Proceedings of the 2021 Conference on Empirical Methods in Natural Language Processing (EMNLP)},
  year = {2021},
  eprint = {2104.08821},
  archivePrefix = {arXiv}
}"""

CLUSTERNS_CITATION = """@inproceedings{deng2023clusterns,
  title = {Clustering-Aware Negative Sampling for Unsupervised Sentence Representation},
  author = {Deng and others},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  year = {2023},
  eprint = {2305.09892},
  archivePrefix = {arXiv},
  note = {Full author list not recorded in hardcse's sources (see arXiv:2305.09892); code: https://github.com/djz233/ClusterNS}
}"""

HSIMCSE_CITATION = """@inproceedings{hsimcse2023,
  title = {{HSimCSE}: Improving Contrastive Learning of Unsupervised Sentence Representation
           with Adversarial Hard Positives and Dual Hard Negatives},
  booktitle = {International Joint Conference on Neural Networks (IJCNN)},
  year = {2023},
  note = {Authors not recorded in hardcse's sources; code: https://github.com/xubodhu/HSimCSE}
}"""
