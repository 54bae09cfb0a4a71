"""Output names: one slugifier, unique names for any set of inputs (vizpipe.pipeline.names)."""

from __future__ import annotations

import itertools

import pytest
from vizpipe.pipeline.names import JOB_CHARS, safe_dirname, slug, unique_slugs


def test_slug_keeps_readable_names_and_drops_the_rest() -> None:
    assert slug("features.3") == "features.3"
    assert slug("a/b:c") == "a_b_c"
    assert slug("a,b=c ü 写") == "a_b_c"
    assert slug("../../etc/passwd") == "etc_passwd"
    assert slug("") == "_" and slug("...") == "_"
    assert slug("cam.layer=layer4,x=1", keep=JOB_CHARS) == "cam.layer=layer4,x=1"


def test_long_names_are_cut_with_a_hash_so_they_never_collide() -> None:
    a, b = slug("x" * 300), slug("x" * 299 + "y")
    assert len(a) == len(b) == 100 and a != b
    assert a.startswith("x" * 80)


@pytest.mark.parametrize(
    ("stems", "ids"),
    [
        (["a", "a", "a_1"], ["d/a.jpg", "d/a.png", "d/a_1.jpg"]),  # same stem, two extensions
        (["a", "a"], ["x/a.jpg", "y/a.jpg"]),  # one file name in two sub-folders of a glob
        (["A", "a"], ["A.jpg", "a.jpg"]),  # differ only by case (case-insensitive file systems)
        (["a,b=c ü 写", "a_b_c"], ["a,b=c ü 写.jpg", "a_b_c.jpg"]),  # characters the slug drops
    ],
)
def test_unique_names_for_colliding_inputs(stems: list[str], ids: list[str]) -> None:
    names = unique_slugs(stems, ids=ids)
    assert len({n.casefold() for n in names}) == len(names), names
    for name, stem in zip(names, stems, strict=True):
        assert name.startswith(slug(stem)), (name, stem)  # still readable
    # deterministic: the same file gets the same name whatever the order of the others
    for order in itertools.permutations(range(len(stems))):
        again = unique_slugs([stems[i] for i in order], ids=[ids[i] for i in order])
        assert again == [names[i] for i in order]


def test_names_without_collisions_are_left_alone() -> None:
    assert unique_slugs(["grace_hopper", "layer4", "b"]) == ["grace_hopper", "layer4", "b"]
    assert unique_slugs(["a_1", "a"], ids=["a_1.jpg", "a.jpg"]) == ["a_1", "a"]


def test_a_hash_suffix_never_lands_on_another_name() -> None:
    first = unique_slugs(["a", "a"], ids=["1", "2"])
    # a third file literally named like the first's disambiguated name
    names = unique_slugs(["a", "a", first[0]], ids=["1", "2", "3"])
    assert len({n.casefold() for n in names}) == 3, names


def test_safe_dirname() -> None:
    """Job folder names keep =,+@; empty-ish texts become 'job'; long ones are cut with a hash."""
    assert safe_dirname("cam.layer=layer4,cam.target_class=207") == "cam.layer=layer4,cam.target_class=207"
    assert safe_dirname("a/b c") == "a_b_c"
    assert safe_dirname("") == "job"
    assert safe_dirname("._ ") == "job"
    assert safe_dirname("+x@y") == "+x@y"
    assert len(safe_dirname("k=" + "v" * 200)) == 120
    assert len(safe_dirname("k=" + "v" * 200, max_len=50)) == 50
