"""Generate the sample dataset in data/sample/ (fixed seed, so the files are reproducible).

A synthetic housing-price regression in the spirit of the California housing data: eight numeric features
with realistic ranges and a non-linear price formula plus noise. CSV with a header row; the target
(`median_house_value`, in $100k) is the FIRST column, which is the container's default target.

    python scripts/make_sample_data.py [--train-rows 2000] [--validation-rows 500] [--out data/sample]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

COLUMNS = [
    "median_house_value",
    "median_income",
    "house_age",
    "avg_rooms",
    "avg_bedrooms",
    "population",
    "avg_occupancy",
    "latitude",
    "longitude",
]
SEED = 20240611


def generate(rows: int, rng: np.random.Generator) -> np.ndarray:
    income = np.clip(rng.lognormal(1.25, 0.45, rows), 0.5, 15.0)
    age = rng.integers(1, 53, rows).astype(np.float64)
    rooms = np.clip(rng.normal(5.3, 1.2, rows) + 0.25 * income, 1.5, 12.0)
    bedrooms = np.clip(rooms * rng.normal(0.2, 0.02, rows), 0.5, 4.0)
    population = np.clip(rng.lognormal(7.0, 0.7, rows), 10, 20000).round()
    occupancy = np.clip(rng.lognormal(1.05, 0.25, rows), 1.0, 8.0)
    # Two "coastal cities" make location matter non-linearly.
    city = rng.integers(0, 2, rows)
    latitude = np.where(city == 0, rng.normal(34.05, 0.6, rows), rng.normal(37.6, 0.6, rows))
    longitude = np.where(city == 0, rng.normal(-118.25, 0.7, rows), rng.normal(-122.2, 0.5, rows))
    coast_distance = np.minimum(
        np.hypot(latitude - 34.0, longitude + 118.5), np.hypot(latitude - 37.7, longitude + 122.4)
    )
    value = (
        0.45 * income
        + 0.9 * np.exp(-coast_distance)
        + 0.012 * age * (age < 40)
        - 0.15 * np.maximum(occupancy - 3.0, 0)
        + 0.05 * (rooms - bedrooms)
        + rng.normal(0.0, 0.25, rows)
    )
    value = np.clip(value, 0.15, 5.0)
    return np.column_stack([value, income, age, rooms, bedrooms, population, occupancy, latitude, longitude])


def write_csv(path: Path, table: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    formats = ["%.4f", "%.4f", "%.0f", "%.3f", "%.3f", "%.0f", "%.3f", "%.4f", "%.4f"]
    np.savetxt(path, table, delimiter=",", fmt=formats, header=",".join(COLUMNS), comments="")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--validation-rows", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "data" / "sample")
    args = parser.parse_args()
    rng = np.random.default_rng(SEED)
    write_csv(args.out / "train" / "train.csv", generate(args.train_rows, rng))
    write_csv(args.out / "validation" / "validation.csv", generate(args.validation_rows, rng))
    print(f"wrote {args.train_rows} + {args.validation_rows} rows to {args.out}")


if __name__ == "__main__":
    main()
