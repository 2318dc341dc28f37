// Alert rules, with the thresholds docs/observability.md uses: more than five 5xx responses in
// 5 minutes, and an average response time over 5 s.
//
// By default, metric alerts on the container app's platform metrics (Requests, ResponseTime), as
// the original lab had them: the ingress records these for every request whatever the app is
// doing, and Azure Monitor evaluates them every minute. A hung app (the lab's own hang fault)
// exports no telemetry while it hangs, so alerts on Application Insights data cannot see the
// hang until it is over.
//
// Optionally (deployLogAlerts), the same two rules as log alerts on Application Insights: they
// also count requests that never pass the ingress (a scenario's load sent over loopback, without
// `host`), at the price of a 5-minute evaluation, ingestion delay and a charge per rule.
// docs/observability.md#alerts compares the two.

@description('Azure region (of the log alert rules; metric alerts and the action group are global).')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

@description('Name of the container app whose platform metrics the metric alerts watch.')
param appName string

@description('Resource id of the Application Insights component the optional log alerts query.')
param applicationInsightsId string

@description('E-mail address notified when a rule fires; empty for none.')
param alertEmail string = ''

@description('Also deploy the two rules as log alerts on Application Insights (see above).')
param deployLogAlerts bool = false

@description('Threshold of the 5xx rules: more than this many 5xx responses in the 5-minute window fires them.')
param max5xxPerWindow int = 5

@description('Threshold of the latency rules, in milliseconds of average response time over the 5-minute window.')
param maxAverageResponseMs int = 5000

resource app 'Microsoft.App/containerApps@2024-03-01' existing = {
  name: appName
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-chaos-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'chaoslab'
    enabled: true
    emailReceivers: [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Metric alerts name their action groups one object each; log alerts take a list of ids.
var metricAlertActions = empty(alertEmail) ? [] : [
  {
    actionGroupId: actionGroup.id
  }
]
var logAlertActionGroups = empty(alertEmail) ? [] : [
  actionGroup.id
]

var errors5xxName = 'alert-5xx-${resourceToken}'
var slowResponsesName = 'alert-latency-${resourceToken}'
var logErrors5xxName = 'alert-log-5xx-${resourceToken}'
var logSlowResponsesName = 'alert-log-latency-${resourceToken}'

// --- Platform metric alerts (always) ---

resource errors5xx 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: errors5xxName
  location: 'global'
  tags: tags
  properties: {
    description: 'chaos-lab: more than ${max5xxPerWindow} 5xx responses in 5 minutes (Container Apps metric Requests, statusCodeCategory 5xx, as the ingress counts them).'
    // 2 (warning): users are getting errors.
    severity: 2
    enabled: true
    scopes: [
      app.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'requests-5xx'
          metricNamespace: 'microsoft.app/containerapps'
          metricName: 'Requests'
          dimensions: [
            {
              name: 'statusCodeCategory'
              operator: 'Include'
              values: [
                '5xx'
              ]
            }
          ]
          timeAggregation: 'Total'
          operator: 'GreaterThan'
          threshold: max5xxPerWindow
        }
      ]
    }
    autoMitigate: true
    actions: metricAlertActions
  }
}

resource slowResponses 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: slowResponsesName
  location: 'global'
  tags: tags
  properties: {
    description: 'chaos-lab: average response time over ${maxAverageResponseMs} ms in 5 minutes (Container Apps metric ResponseTime, as the ingress measures it).'
    // 3 (informational): users are waiting, not failing; the 5xx rule covers requests that time out.
    severity: 3
    enabled: true
    scopes: [
      app.id
    ]
    evaluationFrequency: 'PT1M'
    windowSize: 'PT5M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          criterionType: 'StaticThresholdCriterion'
          name: 'response-time'
          metricNamespace: 'microsoft.app/containerapps'
          metricName: 'ResponseTime'
          timeAggregation: 'Average'
          operator: 'GreaterThan'
          threshold: maxAverageResponseMs
        }
      ]
    }
    autoMitigate: true
    actions: metricAlertActions
  }
}

// --- Log alerts on Application Insights (deployLogAlerts only) ---
// itemCount (not count()) so sampled telemetry still counts every request it stands for.

resource logErrors5xx 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (deployLogAlerts) {
  name: logErrors5xxName
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'chaos-lab (App Insights): more than ${max5xxPerWindow} 5xx responses in 5 minutes'
    description: 'Server errors the app itself recorded (requests with resultCode >= 500), including requests that did not pass the ingress.'
    severity: 2
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: 'requests | where toint(resultCode) >= 500 | project timestamp, itemCount'
          timeAggregation: 'Total'
          metricMeasureColumn: 'itemCount'
          operator: 'GreaterThan'
          threshold: max5xxPerWindow
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: logAlertActionGroups
    }
  }
}

resource logSlowResponses 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = if (deployLogAlerts) {
  name: logSlowResponsesName
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'chaos-lab (App Insights): average response time over ${maxAverageResponseMs} ms'
    description: 'Average request duration over 5 minutes, as the app itself recorded it (requests it finished and exported).'
    severity: 3
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT5M'
    criteria: {
      allOf: [
        {
          query: 'requests | project timestamp, duration'
          timeAggregation: 'Average'
          metricMeasureColumn: 'duration'
          operator: 'GreaterThan'
          threshold: maxAverageResponseMs
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: logAlertActionGroups
    }
  }
}

output alertRuleNames array = concat([
  errors5xx.name
  slowResponses.name
], deployLogAlerts ? [
  logErrors5xxName
  logSlowResponsesName
] : [])
