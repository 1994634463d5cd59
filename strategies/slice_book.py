"""Which units of a grown global model each client holds: index maps by client, and the slices sent this round.

With matching growth (``federated.matching.growth``) the server keeps a global model wider than the clients'
and sends every node the slice its site holds. Sites are named by their replies (``site-name``, else the node
id); node ids are only known when sending, so the book also remembers node id -> site. The map a node was
*sent* is the one its reply is matched from, whatever the site is called, so a renamed or new node never
mixes frames.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from strategies.matching import IndexMaps, MatchingError, PermutationSpec, default_index_maps
from strategies.matching.widths import check_index_maps

log = logging.getLogger(__name__)


class SliceBook:
    """Index maps per site, node id -> site, and the maps sent to each node this round.

    Parameters
    ----------
    spec
        Configured-width permutation spec (the clients' model).
    """

    def __init__(self, spec: PermutationSpec) -> None:
        self.spec = spec
        self.maps: dict[str, IndexMaps] = {}  # site -> maps it holds after the last aggregation
        self.node_sites: dict[int, str] = {}  # node id -> site, learned from replies
        self.sent: dict[int, IndexMaps] = {}  # node id -> maps of the slice sent this round (not persisted)

    def maps_for_node(self, node: int, widths: Mapping[str, int]) -> IndexMaps:
        """The maps to slice for ``node``: its site's, or the default slice (see ``default_index_maps``)."""
        site = self.node_sites.get(node, str(node))
        if site in self.maps:
            try:
                return check_index_maps(self.maps[site], self.spec, widths, f"site '{site}'")
            except MatchingError as exc:  # e.g. a state saved by another config: fall back, never crash a round
                log.warning("%s; sending the default slice", exc)
        return default_index_maps(self.spec, widths, self.maps)

    def record_sent(self, node: int, maps: IndexMaps) -> None:
        """Remember the slice sent to ``node`` this round."""
        self.sent[node] = maps

    def maps_of_reply(self, node: int, site: str) -> IndexMaps | None:
        """The maps of the slice behind a reply: the one sent to ``node``, else the site's stored maps."""
        return self.sent.get(node, self.maps.get(site))

    def learn(self, node: int, site: str, maps: IndexMaps) -> None:
        """Store the maps a site holds after aggregation and which node it replied from."""
        self.node_sites[node] = site
        self.maps[site] = {g: m.clone() for g, m in maps.items()}

    def state_dict(self) -> dict:
        """Tensors and plain types only (the server saves it with ``torch.save``, loads with weights_only)."""
        return {
            "index_maps": {site: {g: m.clone() for g, m in maps.items()} for site, maps in self.maps.items()},
            "node_sites": {str(node): site for node, site in self.node_sites.items()},
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Inverse of :meth:`state_dict`; an empty state leaves the book empty."""
        self.maps = {
            site: {g: torch.as_tensor(m, dtype=torch.int64) for g, m in maps.items()}
            for site, maps in state.get("index_maps", {}).items()
        }
        self.node_sites = {int(node): site for node, site in state.get("node_sites", {}).items()}
        self.sent = {}
