"""`--mode=search`: predictor-guided multi-objective search of a trained run, with OFA's baseline.

Steps, all written under `<run_dir>/search/`:
  1. The budgets are checked first (`--budgets`): an impossible one fails at once, naming the
     smallest achievable cost, before any network is evaluated.
  2. Predictor data: `--predictor_samples` random sub-networks of the last trained phase's space,
     each scored on `--predictor_validation_images` validation images after BN re-calibration on
     `--predictor_calibration_images` (default: the run's own counts), cached in
     `predictor_data/` (an interrupted search resumes without re-evaluating).
  3. The accuracy predictor: every kind is 5-fold cross-validated (Kendall tau and error over the
     out-of-fold predictions of all measured sub-networks); the best kind is fitted on all of them
     (`predictor.npz`, `predictor_report.json`).
  4. NSGA-II (pymoo) maximising predicted accuracy and minimising `--objectives` under the budgets;
     OFA's single-objective evolution under the same budgets as the baseline (with no budget, under
     the median first-objective cost of the front, so that it has one).
  5. Re-evaluation: `--reevaluate` front members spread over the first objective, the baseline's
     pick and the uniform sub-networks the phase evaluation reported are measured on the validation
     split (the figure a choice is made on) and on the test split (reported only).
  6. `pareto.json`, `pareto.png` (accuracy against each cost; uniform networks and the baseline's
     pick marked) and `search_summary.json`.
"""

import os
import time

import numpy as np

from ofav2_tf import errors
from ofav2_tf import latency_table as latency_table_lib
from ofav2_tf import phase_eval
from ofav2_tf import progress
from ofav2_tf import run_folder as run_folder_lib
from ofav2_tf.modes import MODES
from ofav2_tf.modes import common
from ofav2_tf.search import evolution
from ofav2_tf.search import nsga
from ofav2_tf.search import objectives as objectives_lib
from ofav2_tf.search import pareto
from ofav2_tf.search import predictor as predictor_lib
from ofav2_tf.search import predictor_data

SEARCH_DIR = 'search'
SUMMARY_FILE = 'search_summary.json'
PREDICTOR_FILE = 'predictor.npz'


def cost_context(run: common.TrainedRun, names, latency_table_flag):
  """The run's cost context; loads the latency table when a latency cost is asked for."""
  config = run.config
  table = None
  if 'latency' in names:
    path = latency_table_flag or common.latency_table_path(run.folder.path)
    if not os.path.isfile(path):
      raise errors.ConfigError(
          f'a latency objective or budget needs a latency table; {path} does not exist: build it '
          f'with --mode=profile --run_dir={run.folder.path} (or pass --latency_table)')
    table = latency_table_lib.LatencyTable.load(path)
  return objectives_lib.CostContext(config.variant, config.num_classes, config.width_multiplier,
                                    expand_ratios=config.expand_ratios, latency_table=table)


def _budgets_and_objectives(flag_values):
  budgets = objectives_lib.parse_budgets(flag_values.budgets)
  names = list(flag_values.objectives or [])
  if not names:
    raise errors.ConfigError('--objectives is empty; name at least one cost, e.g. macs')
  for name in names + [b.name for b in budgets]:
    objectives_lib.get_objective(name)
  return names, budgets


def _uniform_candidates(run, predictor, context, names, budgets, resolutions):
  """The phase's uniform grid at the evaluation resolutions, within the budgets, predicted."""
  grid = [c for c in run.space.uniform_grid(resolutions)
          if all(b.satisfied(context, c) for b in budgets)]
  return pareto.make_candidates(grid, predictor.predict, context, names, label='uniform')


@MODES.register('search')
def search(flag_values):
  names, budgets = _budgets_and_objectives(flag_values)
  run = common.load_trained_run(flag_values.run_dir, flag_values.phase,
                                common.eval_overrides(flag_values))
  folder, config = run.folder, run.config
  all_costs = list(dict.fromkeys(names + [b.name for b in budgets]))
  context = cost_context(run, all_costs, flag_values.latency_table)
  cheapest = objectives_lib.check_feasible(context, run.space, budgets)
  out = folder.file(SEARCH_DIR)
  os.makedirs(out, exist_ok=True)
  started = time.perf_counter()
  folder.log(f'Search of {folder.path}, phase {run.plan.name}: objectives '
             f'{", ".join(names)}; budgets {", ".join(map(str, budgets)) or "none"}')
  for name, (cheap, cost) in cheapest.items():
    folder.log(f'  smallest {name}: {objectives_lib.get_objective(name).format(cost)} '
               f'({cheap.to_string()})')

  evaluator = phase_eval.Evaluator(run.supernet, run.splits, config.calibration_images,
                                   config.seed, config.validation_images, config.eval_images,
                                   config.eval_split)

  # 2. Predictor data (cached, resumable), with its own image counts.
  samples = flag_values.predictor_samples
  predictor_images = flag_values.predictor_validation_images or config.validation_images
  predictor_calibration = flag_values.predictor_calibration_images or config.calibration_images
  predictor_evaluator = phase_eval.Evaluator(
      run.supernet, run.splits, predictor_calibration, config.seed, predictor_images,
      config.eval_images, config.eval_split, traced_calibration=True)
  counter = {'done': 0, 'start': time.perf_counter()}

  def score(subnet):
    result = predictor_evaluator.evaluate(subnet, 'validation', predictor_images)
    counter['done'] += 1
    if counter['done'] % 10 == 0:
      elapsed = time.perf_counter() - counter['start']
      folder.log(f'  predictor data: {counter["done"]} evaluated this session '
                 f'({elapsed / counter["done"]:.2f} s each)')
    return result.accuracy

  folder.log(f'Predictor data: {samples} random sub-networks on {predictor_images} validation '
             f'images each after BN re-calibration on {predictor_calibration} (cached in '
             'search/predictor_data)')
  dataset = predictor_data.collect(
      run.space, score, os.path.join(out, 'predictor_data'), samples, seed=config.seed,
      include_uniform=False,
      metadata={'phase': run.plan.name, 'validation_images': predictor_images,
                'calibration_images': predictor_calibration, 'seed': config.seed})
  del predictor_evaluator

  # 3. Predictor.
  kinds, folds = predictor_lib.KINDS, predictor_lib.DEFAULT_FOLDS
  with progress.Heartbeat(folder.log, 'predictor cross-validation',
                          total=len(kinds) * folds) as heartbeat:
    predictor, reports = predictor_lib.select_and_fit(
        run.space, dataset.configs, dataset.accuracies, kinds=kinds, folds=folds,
        seed=config.seed, on_fold=lambda kind, i: heartbeat.update(
            done=kinds.index(kind) * folds + i, step=f'{kind} fold {i + 1}/{folds}'))
  predictor.save(os.path.join(out, PREDICTOR_FILE))
  report = {'chosen': predictor.kind, 'samples': len(dataset),
            'accuracy_range': [float(np.min(dataset.accuracies)),
                               float(np.max(dataset.accuracies))],
            'kinds': {k: r.to_dict() for k, r in reports.items()}}
  run_folder_lib.write_json_atomic(os.path.join(out, 'predictor_report.json'), report)
  chosen = reports[predictor.kind]
  folder.log(f'Predictor: {predictor.kind} (held-out Kendall tau {chosen.kendall_tau:.3f}, '
             f'MAE {chosen.mae:.4f}; {chosen.folds}-fold cross-validation, each of the '
             f'{chosen.holdout_size} sub-networks predicted while held out)')

  # 4. NSGA-II, then OFA's evolution as the baseline.
  with progress.Heartbeat(folder.log, 'NSGA-II generations',
                          total=flag_values.generations) as heartbeat:
    result = nsga.search(run.space, predictor, context, names, budgets,
                         population=flag_values.population, generations=flag_values.generations,
                         seed=config.seed, on_generation=lambda g: heartbeat.update(done=g))
  folder.log(f'NSGA-II: {result.evaluations} networks in {result.seconds:.1f} s, '
             f'{len(result.front)} on the Pareto front')
  baseline_budgets = budgets or [objectives_lib.Budget(
      names[0], float(np.median([c.costs[names[0]] for c in result.front])))]
  with progress.Heartbeat(folder.log, 'OFA evolution generations',
                          total=flag_values.baseline_generations) as heartbeat:
    baseline = evolution.search(run.space, predictor, context, baseline_budgets,
                                population=flag_values.population,
                                generations=flag_values.baseline_generations, seed=config.seed,
                                report_costs=all_costs, on_generation=lambda g: heartbeat.update(
                                    done=g))
  baseline_pick = pareto.make_candidates([baseline.best.config], predictor.predict, context,
                                         all_costs, label='evolution')[0]
  folder.log(f'Baseline (OFA evolution under {", ".join(map(str, baseline_budgets))}): '
             f'{baseline_pick.config.to_string()} predicted {baseline_pick.predicted_accuracy:.4f}')

  uniform = _uniform_candidates(run, predictor, context, all_costs, budgets,
                                config.eval_resolutions)
  pareto_result = pareto.ParetoResult(
      variant=config.variant, objectives=names, budgets={b.name: b.limit for b in budgets},
      front=result.front, uniform=uniform, baseline=baseline_pick,
      settings=dict(result.settings, phase=run.plan.name, predictor=predictor.kind,
                    predictor_kendall_tau=chosen.kendall_tau,
                    baseline_budgets={b.name: b.limit for b in baseline_budgets},
                    baseline_generations=flag_values.baseline_generations,
                    nsga_seconds=result.seconds, baseline_seconds=baseline.seconds))

  # 5. Measure a spread of the front, the baseline and a spread of the uniform networks.
  to_measure = pareto.spread(result.front, flag_values.reevaluate, names[0])
  to_measure += pareto.spread(uniform, max(2, flag_values.reevaluate // 2), names[0])
  to_measure.append(baseline_pick)
  measured = {}
  for i, candidate in enumerate(to_measure, 1):
    key = candidate.config.canonical()
    if key not in measured:
      val = evaluator.evaluate(candidate.config, 'validation', config.validation_images).accuracy
      test = evaluator.evaluate(candidate.config, 'test', config.eval_images).accuracy
      measured[key] = (val, test)
      folder.log(f'  [{i}/{len(to_measure)}] {candidate.label:9s} {candidate.config.to_string()}: '
                 f'predicted {candidate.predicted_accuracy:.4f}, validation {val:.4f}, '
                 f'test {test:.4f}')
    pareto_result.set_measured(candidate.config, *measured[key])

  # 6. Files.
  pareto_result.settings['seconds'] = time.perf_counter() - started
  pareto_result.save(common.pareto_path(folder.path))
  plot_costs = list(dict.fromkeys(names + [b.name for b in budgets]))
  pareto.plot(pareto_result, os.path.join(out, 'pareto.png'), plot_costs,
              title=f'{config.variant} on {config.dataset}: phase {run.plan.name}')
  best = max((c for c in pareto_result.front if c.measured_accuracy is not None),
             key=lambda c: c.measured_accuracy)
  summary = {
      'phase': run.plan.name, 'objectives': names, 'budgets': pareto_result.budgets,
      'predictor': report, 'front_size': len(result.front), 'nsga_evaluations': result.evaluations,
      'nsga_seconds': result.seconds, 'baseline': baseline_pick.to_dict(),
      'best_measured': best.to_dict(), 'seconds': pareto_result.settings['seconds']}
  run_folder_lib.write_json_atomic(os.path.join(out, SUMMARY_FILE), summary)
  folder.log(f'Pareto front: {len(result.front)} sub-networks; best measured '
             f'{best.config.to_string()} validation {best.measured_accuracy:.4f} test '
             f'{best.test_accuracy:.4f}; baseline validation '
             f'{baseline_pick.measured_accuracy:.4f} test {baseline_pick.test_accuracy:.4f} '
             f'(files in {out})')
  return summary
