// The JSON shapes of the gateway's API (docs/gateway.md, /openapi.json), as far as the page reads them.

export interface ApiErrorBody {
  error: string;
  message: string;
}

export interface Me {
  user: string;
  role: 'admin' | 'student';
  auth: 'dev' | 'proxy' | 'token';
}

export interface RuleView {
  id: string;
  type: string;
  description?: string | null;
  target?: string | null;
}

export interface TaskView {
  id: string;
  title: string;
  description: string;
  hints: string[];
  objective?: string;
  steps?: string[];
  background?: string | null;
  markdown: string;
  validation: RuleView[];
}

export interface ScenarioView {
  id: string;
  title: string;
  description: string;
  difficulty: string;
  timeEstimate: string;
  topics: string[];
  category?: string | null;
  tasks: TaskView[];
  version: string;
}

export type Categories = Record<string, string>;

export interface SessionTaskView {
  id: string;
  status: 'pending' | 'completed' | 'failed' | string;
  validationTime: string;
  attempts: number;
  lastRun?: string | null;
}

export interface SetupView {
  total: number;
  completed: number;
  step?: string | null;
  finishedAt?: string | null;
}

export interface ConditionView {
  type: string;
  status: string;
  reason: string;
  message: string;
}

export interface TerminalTarget {
  target: string;
  id: string;
}

export interface SessionView {
  id: string;
  sessionId: string;
  scenarioId: string;
  status: 'pending' | 'running' | 'expired' | 'ended' | 'failed' | string;
  statusMessage?: string | null;
  phase: string;
  reason?: string | null;
  message?: string | null;
  user: string;
  pool: string;
  queuePosition?: number | null;
  durationMinutes: number;
  startTime: string;
  expirationTime: string;
  createdAt: string;
  endedAt?: string | null;
  assignedCluster?: string | null;
  setup?: SetupView | null;
  tasks: SessionTaskView[];
  terminals: TerminalTarget[];
  conditions: ConditionView[];
}

export interface RuleResult {
  ruleId: string;
  ruleType: string;
  passed: boolean;
  message: string;
  expected?: string | null;
  actual?: string | null;
  errorCode?: string | null;
  description?: string | null;
  taskId: string;
  durationMillis: number;
}

export interface ValidationView {
  success: boolean;
  message: string;
  results: RuleResult[];
  timestamp: string;
  runId: string;
  phase: string;
  taskId: string;
  finished: boolean;
  url?: string | null;
}

export interface ExtendedView {
  message: string;
  sessionId: string;
  addedMinutes: number;
  durationMinutes: number;
  expirationTime: string;
}

export interface ActionView {
  message: string;
  action: string;
  released?: string[] | null;
}

export interface PoolView {
  name: string;
  minAvailable: number;
  maxClusters: number;
  maxSessionMinutes: number;
  status: Record<string, unknown>;
  conditions: ConditionView[];
}

export interface ClusterView {
  clusterId: string;
  status: string;
  phase: string;
  pool: string;
  assignedSession?: string | null;
  sessionsServed: number;
  lastReset: string;
  lastResetDurationSeconds?: number | null;
  lockTime: string;
  createdAt: string;
  resetRequested: boolean;
  failureMessage?: string | null;
}

export interface PoolStatusView {
  totalClusters: number;
  availableClusters: number;
  lockedClusters: number;
  resettingClusters: number;
  errorClusters: number;
  statusByCluster: Record<string, string>;
  detailedClusters?: Record<string, ClusterView> | null;
  pools?: PoolView[] | null;
}

export interface AdminSessionsView {
  sessions: SessionView[];
  stats: { totalSessions: number; runningSessions: number; provisioningSessions: number };
}

export interface ReloadView {
  message: string;
  scenarios: number;
  errors: string[];
  stale: string[];
  warnings: number;
}

export interface TerminalGrant {
  terminalId: string;
  terminalUrl: string;
  target: string;
  expiresAt: string;
}
