"""The pure helpers of benchmarks/peer_ofa.py: FLOP accounting, flags and the JSON summary.

Neither torch nor ofa is needed (nor imported): the workers are not started here.
"""

import os
import subprocess
import sys

from absl.testing import absltest

from benchmarks import peer_ofa

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX = ([7] * 20, [6] * 20, [4] * 5)
MIN = ([3] * 20, [3] * 20, [2] * 5)


def fake_macs(kernel, expand, depth, resolution, num_classes):
  """1000 MACs per unit of (sum of kernel + expand + depth), whatever the resolution."""
  del resolution, num_classes
  return 1000 * (sum(kernel) + sum(expand) + sum(depth))


def step(seconds, subnets, teacher=False):
  return {'seconds': seconds, 'subnets': [list(map(list, s)) for s in subnets], 'teacher': teacher}


class PeerOfaTest(absltest.TestCase):

  def test_training_step_flops(self):
    # 3 x forward per trained network, 1 x for the teacher, 2 FLOP/MAC, times the batch.
    self.assertEqual(peer_ofa.training_step_flops(64, [10]), 2 * 64 * 30)
    self.assertEqual(peer_ofa.training_step_flops(2, [10, 20], teacher_macs=5), 2 * 2 * (90 + 5))

  def test_forward_macs_matches_ofa_counter(self):
    # OFA's own count_net_flops on OFAMobileNetV3 (200 classes, 64x64), measured once.
    self.assertEqual(peer_ofa.forward_macs(*map(tuple, MAX), 64, 200), 49_798_016)
    self.assertEqual(peer_ofa.forward_macs(*map(tuple, MIN), 64, 200), 11_433_152)
    self.assertEqual(peer_ofa.forward_macs(*map(tuple, MAX), 32, 200), 15_441_440)

  def test_worker_flags_round_trip(self):
    args = peer_ofa.parse_args(['--resolutions=32', '--subnets=1,4', '--steps=2', '--warmup=0',
                                '--ofa_teacher_mode=eval'])
    worker = peer_ofa.parse_args(['--side=ofa'] + peer_ofa.worker_flags(args))
    self.assertEqual(worker.side, 'ofa')
    for name in ('resolutions', 'subnets', 'steps', 'warmup', 'batch', 'ofa_teacher_mode',
                 'matmul_size', 'threads', 'seed'):
      self.assertEqual(getattr(worker, name), getattr(args, name), name)
    self.assertEqual(peer_ofa.case_names(args.subnets),
                     ['max', 'min', 'random', 'kd1', 'kd4'])

  def test_parse_args_rejects_zero_steps(self):
    with self.assertRaises(SystemExit):
      peer_ofa.parse_args(['--steps=0'])

  def test_summarize_case(self):
    ofa = [[step(2.0, [MAX]), step(4.0, [MAX])], [step(3.0, [MAX])]]
    ours = [[step(1.0, [MAX]), step(1.0, [MAX])], [step(3.0, [MAX])]]
    out = peer_ofa.summarize_case({'ofa': ofa, 'ofav2_tf': ours}, 64, 10, 200, 100.0, fake_macs)
    self.assertEqual(out['ofa']['median_s'], 3.0)
    self.assertEqual(out['ofav2_tf']['median_s'], 1.0)
    self.assertEqual(out['ratio'], round(1 / 3, 3))
    self.assertEqual(out['ratio_rounds'], [0.333, 1.0])  # round medians 3/1 and 3/3
    flops = 2 * 10 * 3 * fake_macs(*MAX, 64, 200)
    self.assertAlmostEqual(out['ofav2_tf']['gflops'], round(flops / 1.0 / 1e9, 2))
    self.assertAlmostEqual(out['ofav2_tf']['fraction'], round(flops / 1e9 / 100.0, 4))
    self.assertEqual(out['ofa']['mean_mmacs'], round(fake_macs(*MAX, 64, 200) / 1e6, 2))

  def test_summarize_case_counts_teacher_and_every_subnet(self):
    kd = [[step(1.0, [MAX, MIN], teacher=True)]]
    out = peer_ofa.summarize_case({'ofa': kd, 'ofav2_tf': kd}, 32, 4, 200, 0.0, fake_macs)
    big, small = fake_macs(*MAX, 32, 200), fake_macs(*MIN, 32, 200)
    self.assertAlmostEqual(out['ofa']['gflops'], round(2 * 4 * (3 * (big + small) + big) / 1e9, 2))
    self.assertIsNone(out['ofa']['fraction'])  # no peak measured
    self.assertEqual(out['ratio'], 1.0)

  def test_summarize_assembles_one_json_object(self):
    args = peer_ofa.parse_args(['--resolutions=32', '--subnets=2', '--rounds=1'])
    cases = {f'32/{c}': [step(0.5, [MAX] * (2 if c == 'kd2' else 1), teacher=c == 'kd2')]
             for c in peer_ofa.case_names(args.subnets)}
    big, small = fake_macs(*MAX, 32, 200), fake_macs(*MIN, 32, 200)
    ready = {'ofa': {'macs_check': {'32': {'max': big, 'min': small, 'teacher': big}}},
             'ofav2_tf': {'trace_seconds': {}}}
    rounds = {'ofa': [{'matmul_gflops': [90.0, 110.0], 'cases': cases}],
              'ofav2_tf': [{'matmul_gflops': [200.0], 'cases': cases}]}
    result = peer_ofa.summarize(args, ready, rounds, fake_macs)
    self.assertEqual(result['matmul_gflops'], {'tensorflow': 200.0, 'torch': 100.0, 'size': 2048})
    self.assertEqual(sorted(result['results']['32']), ['kd2', 'max', 'min', 'random'])
    self.assertTrue(result['macs_check']['match'])
    self.assertEqual(result['macs_check']['32']['min'], [small, small])
    self.assertEqual(result['setup'], ready)

  def test_import_loads_only_the_standard_library(self):
    # The peer interpreter has numpy, torch and ofa only; the product never needs torch.
    code = ('import sys; import benchmarks.peer_ofa; print(sorted({m.split(".")[0] for m in '
            'sys.modules} & {"torch", "ofa", "tensorflow", "absl", "numpy", "ofav2_tf"}))')
    out = subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, capture_output=True,
                         text=True).stdout
    self.assertEqual(out.strip(), '[]')


if __name__ == '__main__':
  absltest.main()
