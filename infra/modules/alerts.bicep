// Log alert rules on Application Insights, the same thresholds docs/observability.md queries:
// more than five 5xx responses in 5 minutes, and an average response time over 5 s.
// itemCount (not count()) so sampled telemetry still counts every request it stands for.

@description('Azure region.')
param location string

@description('Tags applied to every resource.')
param tags object

@description('Suffix that makes resource names unique.')
param resourceToken string

@description('Resource id of the Application Insights component the rules query.')
param applicationInsightsId string

@description('E-mail address notified when a rule fires; empty for none.')
param alertEmail string = ''

@description('Threshold of the 5xx rule: more than this many 5xx responses in the window fires it.')
param max5xxPerWindow int = 5

@description('Threshold of the latency rule, in milliseconds of average request duration.')
param maxAverageResponseMs int = 5000

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

var actionGroups = empty(alertEmail) ? [] : [
  actionGroup.id
]

resource errors5xx 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-5xx-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'chaos-lab: more than ${max5xxPerWindow} 5xx responses in 5 minutes'
    description: 'Server errors seen by Application Insights (requests with resultCode >= 500).'
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
      actionGroups: actionGroups
    }
  }
}

resource slowResponses 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: 'alert-latency-${resourceToken}'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'chaos-lab: average response time over ${maxAverageResponseMs} ms'
    description: 'Average request duration over 5 minutes, as Application Insights records it.'
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
      actionGroups: actionGroups
    }
  }
}

output alertRuleNames array = [
  errors5xx.name
  slowResponses.name
]
